import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

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

function currentVersions(db: Kysely<Database>, userRef: Buffer) {
  return db
    .selectFrom("secrets as s")
    .innerJoin("secret_versions as v", (join) =>
      join.onRef("v.secret_id", "=", "s.id").onRef("v.version", "=", "s.current_version"),
    )
    .where("s.user_ref", "=", userRef);
}

const METADATA_COLUMNS = [
  "s.id",
  "s.provider",
  "s.label",
  "s.current_version",
  "s.created_at",
  "s.updated_at",
  "s.last_used_at",
  "v.hint_ciphertext",
  "v.fingerprint",
  "v.field_names",
] as const;

export async function listSecrets(
  db: Kysely<Database>,
  userRef: Buffer,
  provider: string | undefined,
): Promise<StoredSecret[]> {
  let query = currentVersions(db, userRef).select(METADATA_COLUMNS);
  if (provider !== undefined) query = query.where("s.provider", "=", provider);
  const rows = await query.orderBy("s.created_at").orderBy("s.id").execute();
  return rows.map((row) => ({
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
  }));
}

/** The user's secret with its current ciphertext; undefined if absent OR another user's (I4). */
export async function findSecretWithCiphertext(
  db: Kysely<Database>,
  userRef: Buffer,
  secretId: string,
): Promise<StoredSecretWithCiphertext | undefined> {
  const row = await currentVersions(db, userRef)
    .select([...METADATA_COLUMNS, "v.ciphertext"])
    .where("s.id", "=", secretId)
    .executeTakeFirst();
  return (
    row && {
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
      ciphertext: row.ciphertext,
    }
  );
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
