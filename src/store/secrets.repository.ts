import type { Kysely } from "kysely";
import type { PreparedRunner, PreparedStatement } from "./prepared.js";
import type { Database } from "./schema.js";
import type { StoredUserKey } from "./users.repository.js";

/** A secret's row joined with its current version. Ciphertexts are opaque here: store/ never decrypts. */
export interface StoredSecret {
  readonly id: string;
  readonly provider: string;
  readonly label: string;
  readonly version: number;
  readonly hintCiphertext: Uint8Array;
  readonly fingerprint: string;
  readonly fieldNames: readonly string[];
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly lastUsedAt: Date | null;
}

export interface StoredSecretWithCiphertext extends StoredSecret {
  readonly ciphertext: Uint8Array;
}

export interface NewSecretVersion {
  readonly secretId: string;
  readonly version: number;
  readonly ciphertext: Uint8Array;
  readonly hintCiphertext: Uint8Array;
  readonly fingerprint: string;
  readonly fieldNames: readonly string[];
  readonly createdAt: Date;
}

// Hot path: the user's secrets with their current version AND the user's wrapped data key,
// in one round trip (prepared statements; see prepared.ts).
const SELECT_WITH_KEY = `
  select s.id, s.provider, s.label, s.current_version, s.created_at, s.updated_at, s.last_used_at,
         v.hint_ciphertext, v.fingerprint, v.field_names,
         u.wrapped_data_key, u.master_key_id, u.data_key_version, u.encryptions`;
const FROM_WITH_KEY = `
    from secrets s
    join secret_versions v on v.secret_id = s.id and v.version = s.current_version
    join users u on u.user_ref = s.user_ref
   where s.user_ref = $1`;

const LIST: PreparedStatement = {
  name: "kb_list_secrets",
  text: `${SELECT_WITH_KEY} ${FROM_WITH_KEY} and ($2::text is null or s.provider = $2) order by s.created_at, s.id`,
};

const FIND_FOR_USE: PreparedStatement = {
  name: "kb_find_secret_for_use",
  text: `${SELECT_WITH_KEY}, v.ciphertext ${FROM_WITH_KEY} and s.id = $2`,
};

interface SecretWithKeyRow {
  id: string;
  provider: string;
  label: string;
  current_version: number;
  created_at: Date;
  updated_at: Date;
  last_used_at: Date | null;
  hint_ciphertext: Uint8Array;
  fingerprint: string;
  field_names: string[];
  wrapped_data_key: Uint8Array;
  master_key_id: string;
  data_key_version: number;
  encryptions: number;
  ciphertext?: Uint8Array;
}

function toStoredSecret(row: SecretWithKeyRow): StoredSecret {
  return {
    id: row.id,
    provider: row.provider,
    label: row.label,
    version: row.current_version,
    hintCiphertext: row.hint_ciphertext,
    fingerprint: row.fingerprint,
    fieldNames: row.field_names,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    lastUsedAt: row.last_used_at,
  };
}

function toUserKey(row: SecretWithKeyRow): StoredUserKey {
  return {
    wrappedDataKey: row.wrapped_data_key,
    masterKeyId: row.master_key_id,
    dataKeyVersion: row.data_key_version,
    encryptions: row.encryptions,
  };
}

/** The user's secrets (current versions) and, if they have any, the user's wrapped data key. */
export async function listSecretsWithUserKey(
  prepared: PreparedRunner,
  userRef: Buffer,
  provider: string | undefined,
): Promise<{ secrets: StoredSecret[]; userKey: StoredUserKey | undefined }> {
  const rows = await prepared.rows<SecretWithKeyRow>(LIST, [userRef, provider ?? null]);
  const first = rows[0];
  return { secrets: rows.map(toStoredSecret), userKey: first === undefined ? undefined : toUserKey(first) };
}

/** The user's secret with its ciphertext and the user's wrapped key; undefined if absent OR another user's (I4). */
export async function findSecretForUse(
  prepared: PreparedRunner,
  userRef: Buffer,
  secretId: string,
): Promise<{ secret: StoredSecretWithCiphertext; userKey: StoredUserKey } | undefined> {
  const [row] = await prepared.rows<SecretWithKeyRow>(FIND_FOR_USE, [userRef, secretId]);
  if (row === undefined || row.ciphertext === undefined) return undefined;
  return { secret: { ...toStoredSecret(row), ciphertext: row.ciphertext }, userKey: toUserKey(row) };
}

/** Locks the user's secret row for a version bump; undefined if absent or another user's. */
export async function lockSecret(
  db: Kysely<Database>,
  userRef: Buffer,
  secretId: string,
): Promise<{ provider: string; label: string; currentVersion: number; createdAt: Date } | undefined> {
  const row = await db
    .selectFrom("secrets")
    .select(["provider", "label", "current_version", "created_at"])
    .where("id", "=", secretId)
    .where("user_ref", "=", userRef)
    .forUpdate()
    .executeTakeFirst();
  return (
    row && {
      provider: row.provider,
      label: row.label,
      currentVersion: row.current_version,
      createdAt: row.created_at,
    }
  );
}

export async function insertSecret(
  db: Kysely<Database>,
  secret: { id: string; userRef: Buffer; provider: string; label: string; createdAt: Date },
): Promise<void> {
  await db
    .insertInto("secrets")
    .values({
      id: secret.id,
      user_ref: secret.userRef,
      provider: secret.provider,
      label: secret.label,
      current_version: 1,
      created_at: secret.createdAt,
      updated_at: secret.createdAt,
      last_used_at: null,
    })
    .execute();
}

export async function insertSecretVersion(db: Kysely<Database>, version: NewSecretVersion): Promise<void> {
  await db
    .insertInto("secret_versions")
    .values({
      secret_id: version.secretId,
      version: version.version,
      ciphertext: version.ciphertext,
      hint_ciphertext: version.hintCiphertext,
      fingerprint: version.fingerprint,
      field_names: [...version.fieldNames],
      created_at: version.createdAt,
    })
    .execute();
}

export async function setCurrentVersion(
  db: Kysely<Database>,
  secretId: string,
  version: number,
  label: string,
  at: Date,
): Promise<void> {
  await db
    .updateTable("secrets")
    .set({ current_version: version, label, updated_at: at })
    .where("id", "=", secretId)
    .execute();
}

/** Drops versions older than the newest `keep`: old credentials are a liability, not a feature. */
export async function pruneVersions(
  db: Kysely<Database>,
  secretId: string,
  currentVersion: number,
  keep: number,
): Promise<void> {
  await db
    .deleteFrom("secret_versions")
    .where("secret_id", "=", secretId)
    .where("version", "<=", currentVersion - keep)
    .execute();
}

/** Deletes the user's secret and its versions; false if absent or another user's. */
export async function deleteSecret(
  db: Kysely<Database>,
  userRef: Buffer,
  secretId: string,
): Promise<boolean> {
  const result = await db
    .deleteFrom("secrets")
    .where("id", "=", secretId)
    .where("user_ref", "=", userRef)
    .executeTakeFirst();
  return result.numDeletedRows > 0n;
}

export async function countSecrets(db: Kysely<Database>, userRef: Buffer): Promise<number> {
  const row = await db
    .selectFrom("secrets")
    .select((eb) => eb.fn.countAll<string | number | bigint>().as("n"))
    .where("user_ref", "=", userRef)
    .executeTakeFirstOrThrow();
  return Number(row.n);
}

export async function markSecretUsed(db: Kysely<Database>, secretId: string, at: Date): Promise<void> {
  await db.updateTable("secrets").set({ last_used_at: at }).where("id", "=", secretId).execute();
}
