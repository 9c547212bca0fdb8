import type { Kysely } from "kysely";
import { createBatchedLookup } from "./batched-lookup.js";
import type { PreparedRunner, PreparedStatement } from "./prepared.js";
import type { Database, OAuthStatus } from "./schema.js";
import type { StoredUserKey } from "./users.repository.js";

/** A secret's row joined with its current version. Ciphertexts are opaque here: store/ never decrypts. */
export interface StoredSecret {
  readonly id: string;
  readonly provider: string;
  readonly label: string;
  readonly version: number;
  /** The MAC pinning `version` as current (catalogue L1); null for a secret not yet bound. */
  readonly headMac: Uint8Array | null;
  /** The operation classes the head binds (issue 13); null for a secret stored before grants. */
  readonly grant: readonly string[] | null;
  readonly hintCiphertext: Uint8Array;
  readonly fingerprint: string;
  readonly fieldNames: readonly string[];
  readonly createdAt: Date;
  readonly updatedAt: Date;
  readonly lastUsedAt: Date | null;
  readonly inspection: StoredInspection;
  /** Migration 0014: the OAuth connection state, or null for a secret that is not a connection. */
  readonly connection: StoredConnection | null;
}

/** An OAuth connection's non-secret state (issue 15); it describes the secret's current version. */
export interface StoredConnection {
  readonly status: OAuthStatus;
  /** When the current access token expires; null when the provider gave no lifetime. */
  readonly expiresAt: Date | null;
  /** The scopes the provider granted. */
  readonly scopes: readonly string[];
}

/** The last key inspection of a secret's current key (migration 0008); names only, never a value. */
export interface StoredInspection {
  readonly verdict: "none" | "ok" | "warned" | "refused";
  readonly permissions: readonly string[];
  readonly dangerous: readonly string[];
  readonly checkedAt: Date | null;
}

const VERDICTS: ReadonlySet<string> = new Set(["none", "ok", "warned", "refused"]);

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
  select s.id, s.provider, s.label, s.current_version, s.head_mac, s.operation_grant, s.created_at, s.updated_at, s.last_used_at,
         v.hint_ciphertext, v.fingerprint, v.field_names,
         s.inspection_verdict, s.inspection_permissions, s.inspection_dangerous, s.inspected_at,
         s.oauth_status, s.oauth_expires_at, s.oauth_scopes,
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

// A batch of (user, secret) pairs: a row comes back only for a pair that matches BOTH, so one
// user's id in the same batch as another user's request can never answer it (I4).
const FIND_FOR_USE: PreparedStatement = {
  name: "kb_find_secrets_for_use",
  text: `${SELECT_WITH_KEY}, v.ciphertext, s.user_ref
    from unnest($1::text[], $2::uuid[]) as want(user_ref_hex, id)
    join secrets s on s.id = want.id and s.user_ref = decode(want.user_ref_hex, 'hex')
    join secret_versions v on v.secret_id = s.id and v.version = s.current_version
    join users u on u.user_ref = s.user_ref`,
};

interface SecretWithKeyRow {
  id: string;
  provider: string;
  label: string;
  current_version: number;
  head_mac: Uint8Array | null;
  operation_grant: string[] | null;
  created_at: Date;
  updated_at: Date;
  last_used_at: Date | null;
  hint_ciphertext: Uint8Array;
  fingerprint: string;
  field_names: string[];
  inspection_verdict: string;
  inspection_permissions: string[];
  inspection_dangerous: string[];
  inspected_at: Date | null;
  oauth_status: string | null;
  oauth_expires_at: Date | null;
  oauth_scopes: string[] | null;
  wrapped_data_key: Uint8Array;
  master_key_id: string;
  data_key_version: number;
  encryptions: number;
  ciphertext?: Uint8Array;
  user_ref?: Uint8Array;
}

function toStoredSecret(row: SecretWithKeyRow): StoredSecret {
  return {
    id: row.id,
    provider: row.provider,
    label: row.label,
    version: row.current_version,
    headMac: row.head_mac,
    grant: row.operation_grant,
    hintCiphertext: row.hint_ciphertext,
    fingerprint: row.fingerprint,
    fieldNames: row.field_names,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
    lastUsedAt: row.last_used_at,
    inspection: {
      // The check constraint allows only these; anything else reads as not inspected.
      verdict: VERDICTS.has(row.inspection_verdict)
        ? (row.inspection_verdict as StoredInspection["verdict"])
        : "none",
      permissions: row.inspection_permissions,
      dangerous: row.inspection_dangerous,
      checkedAt: row.inspected_at,
    },
    connection: toStoredConnection(row),
  };
}

/** The check constraint allows only these two statuses, and scopes exactly with a status. */
export function toStoredConnection(row: {
  oauth_status: string | null;
  oauth_expires_at: Date | null;
  oauth_scopes: string[] | null;
}): StoredConnection | null {
  if (row.oauth_status === null || row.oauth_scopes === null) return null;
  return {
    status: row.oauth_status === "active" ? "active" : "needs_reconsent",
    expiresAt: row.oauth_expires_at,
    scopes: row.oauth_scopes,
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

/** A secret ready to open: its current version's ciphertext and the owner's wrapped data key. */
export interface SecretForUse {
  readonly secret: StoredSecretWithCiphertext;
  readonly userKey: StoredUserKey;
}

/** One user's request for one of their secrets. */
export interface SecretForUseKey {
  readonly userRef: Buffer;
  readonly secretId: string;
}

const forUseId = (userRef: Uint8Array, secretId: string): string =>
  `${Buffer.from(userRef.buffer, userRef.byteOffset, userRef.byteLength).toString("hex")}/${secretId}`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Each requested secret that exists AND belongs to the user who asked, by `user ref hex/secret id`. */
export async function findSecretsForUse(
  prepared: PreparedRunner,
  keys: readonly SecretForUseKey[],
): Promise<Map<string, SecretForUse>> {
  const rows = await prepared.rows<SecretWithKeyRow>(FIND_FOR_USE, [
    keys.map((k) => k.userRef.toString("hex")),
    keys.map((k) => k.secretId),
  ]);
  const found = new Map<string, SecretForUse>();
  for (const row of rows) {
    if (row.ciphertext === undefined || row.user_ref === undefined) continue;
    found.set(forUseId(row.user_ref, row.id), {
      secret: { ...toStoredSecret(row), ciphertext: row.ciphertext },
      userKey: toUserKey(row),
    });
  }
  return found;
}

/** Finds one of a user's secrets for use; undefined if absent OR another user's (I4). */
export interface SecretForUseLookup {
  find(userRef: Buffer, secretId: string): Promise<SecretForUse | undefined>;
}

/** The proxy's hot-path read: lookups of one moment share a query (see batched-lookup.ts). */
export function createSecretForUseLookup(prepared: PreparedRunner): SecretForUseLookup {
  const lookup = createBatchedLookup<SecretForUseKey, SecretForUse>({
    load: (keys) => findSecretsForUse(prepared, keys),
    idOf: (key) => forUseId(key.userRef, key.secretId),
    maxBatch: 256,
    maxInFlight: 2,
  });
  return {
    // Not a uuid cannot exist, and must not fail the batch it would have shared with others.
    find: (userRef, secretId) =>
      UUID.test(secretId) ? lookup.get({ userRef, secretId }) : Promise.resolve(undefined),
  };
}

/** Locks the user's secret row for a version bump; undefined if absent or another user's. */
export async function lockSecret(
  db: Kysely<Database>,
  userRef: Buffer,
  secretId: string,
): Promise<
  | {
      provider: string;
      label: string;
      currentVersion: number;
      headMac: Uint8Array | null;
      grant: readonly string[] | null;
      createdAt: Date;
    }
  | undefined
> {
  const row = await db
    .selectFrom("secrets")
    .select(["provider", "label", "current_version", "head_mac", "operation_grant", "created_at"])
    .where("id", "=", secretId)
    .where("user_ref", "=", userRef)
    .forUpdate()
    .executeTakeFirst();
  return (
    row && {
      provider: row.provider,
      label: row.label,
      currentVersion: row.current_version,
      headMac: row.head_mac,
      grant: row.operation_grant,
      createdAt: row.created_at,
    }
  );
}

export async function insertSecret(
  db: Kysely<Database>,
  secret: {
    id: string;
    userRef: Buffer;
    provider: string;
    label: string;
    headMac: Uint8Array;
    grant: readonly string[];
    createdAt: Date;
    inspection?: StoredInspection;
  },
): Promise<void> {
  await db
    .insertInto("secrets")
    .values({
      id: secret.id,
      user_ref: secret.userRef,
      provider: secret.provider,
      label: secret.label,
      current_version: 1,
      head_mac: secret.headMac,
      operation_grant: [...secret.grant],
      created_at: secret.createdAt,
      updated_at: secret.createdAt,
      last_used_at: null,
      ...(secret.inspection === undefined ? {} : inspectionColumns(secret.inspection)),
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

/** Moves the pointer to a new version, with its grant and the head MAC that pins both (L1, I10). */
export async function setCurrentVersion(
  db: Kysely<Database>,
  current: {
    secretId: string;
    version: number;
    headMac: Uint8Array;
    grant: readonly string[];
    label: string;
    at: Date;
    inspection?: StoredInspection;
  },
): Promise<void> {
  const { secretId, version, headMac, grant, label, at, inspection } = current;
  await db
    .updateTable("secrets")
    .set({
      current_version: version,
      head_mac: headMac,
      operation_grant: [...grant],
      label,
      updated_at: at,
      ...(inspection === undefined ? {} : inspectionColumns(inspection)),
    })
    .where("id", "=", secretId)
    .execute();
}

/** A kept version's ciphertexts, to re-seal in place (the L1 upgrade of a secret not yet bound). */
export interface SealedVersion {
  readonly version: number;
  readonly ciphertext: Uint8Array;
  readonly hintCiphertext: Uint8Array;
}

/** The secret's versions below `below`, oldest first. */
export async function listVersionsBelow(
  db: Kysely<Database>,
  secretId: string,
  below: number,
): Promise<SealedVersion[]> {
  const rows = await db
    .selectFrom("secret_versions")
    .select(["version", "ciphertext", "hint_ciphertext"])
    .where("secret_id", "=", secretId)
    .where("version", "<", below)
    .orderBy("version")
    .execute();
  return rows.map((row) => ({
    version: row.version,
    ciphertext: row.ciphertext,
    hintCiphertext: row.hint_ciphertext,
  }));
}

export async function replaceVersionCiphertexts(
  db: Kysely<Database>,
  secretId: string,
  version: SealedVersion,
): Promise<void> {
  await db
    .updateTable("secret_versions")
    .set({ ciphertext: version.ciphertext, hint_ciphertext: version.hintCiphertext })
    .where("secret_id", "=", secretId)
    .where("version", "=", version.version)
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

function inspectionColumns(inspection: StoredInspection) {
  return {
    inspection_verdict: inspection.verdict,
    inspection_permissions: [...inspection.permissions],
    inspection_dangerous: [...inspection.dangerous],
    inspected_at: inspection.checkedAt,
  };
}

/**
 * Records a re-inspection (InspectSecret) of the user's secret, only while `version` is still its
 * current one: a key replaced meanwhile keeps the result of its own inspection. False otherwise.
 */
export async function setInspection(
  db: Kysely<Database>,
  userRef: Buffer,
  secretId: string,
  version: number,
  inspection: StoredInspection,
): Promise<boolean> {
  const result = await db
    .updateTable("secrets")
    .set(inspectionColumns(inspection))
    .where("id", "=", secretId)
    .where("user_ref", "=", userRef)
    .where("current_version", "=", version)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}
