import type { Kysely } from "kysely";
import { createBatchedLookup } from "./batched-lookup.js";
import { createdAtMicros, type KeysetPosition, pageOf } from "./keyset-page.js";
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

// One page in (created_at, id) order, after the position $3/$4 (both null for the first page).
// No index beyond the user_ref prefix of the unique key is needed: a page is one user's secrets.
const LIST: PreparedStatement = {
  name: "kb_list_secrets_page",
  text: `${SELECT_WITH_KEY}, ${createdAtMicros("s")} as created_at_micros ${FROM_WITH_KEY}
     and ($2::text is null or s.provider = $2)
     and ($3::int8 is null or (s.created_at, s.id) > ('epoch'::timestamptz + $3::int8 * interval '1 microsecond', $4::uuid))
   order by s.created_at, s.id
   limit $5`,
};

/**
 * The read of a batch of (user, secret) pairs, given as parameters `$userRefs` (hex text[]) and
 * `$ids` (uuid[]): a row comes back only for a pair that matches BOTH, so one user's id in the
 * same batch as another user's request can never answer it (I4). Also the body of the read the
 * audit trail's `started` commit does for a proxied call (audit.repository.ts, issue 17 item 2).
 */
export function secretsForUseQuery(userRefs: string, ids: string): string {
  return `${SELECT_WITH_KEY}, v.ciphertext, s.user_ref as owner_ref
    from unnest(${userRefs}::text[], ${ids}::uuid[]) as want(user_ref_hex, id)
    join secrets s on s.id = want.id and s.user_ref = decode(want.user_ref_hex, 'hex')
    join secret_versions v on v.secret_id = s.id and v.version = s.current_version
    join users u on u.user_ref = s.user_ref`;
}

const FIND_FOR_USE: PreparedStatement = {
  name: "kb_find_secrets_for_use",
  text: secretsForUseQuery("$1", "$2"),
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
  owner_ref?: Uint8Array;
}

/** A row of `secretsForUseQuery`, as another statement returns it (null columns: no row). */
export type SecretForUseRow = Partial<SecretWithKeyRow>;

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

/** Secrets lists tell their page tokens apart from other lists' by this. */
export const SECRETS_PAGE_KIND = "s";

/**
 * One page of the user's secrets (current versions), after `after`, and, if the page has any,
 * the user's wrapped data key. `nextPageToken` is empty on the last page.
 */
export async function listSecretsWithUserKey(
  prepared: PreparedRunner,
  userRef: Buffer,
  query: { provider: string | undefined; after: KeysetPosition | undefined; size: number },
): Promise<{ secrets: StoredSecret[]; userKey: StoredUserKey | undefined; nextPageToken: string }> {
  const rows = await prepared.rows<SecretWithKeyRow & { created_at_micros: number }>(LIST, [
    userRef,
    query.provider ?? null,
    query.after?.createdAtMicros ?? null,
    query.after?.id ?? null,
    query.size + 1,
  ]);
  const page = pageOf(
    SECRETS_PAGE_KIND,
    rows.map((row) => ({ row, id: row.id, createdAtMicros: row.created_at_micros })),
    query.size,
  );
  const first = page.rows[0];
  return {
    secrets: page.rows.map(({ row }) => toStoredSecret(row)),
    userKey: first === undefined ? undefined : toUserKey(first.row),
    nextPageToken: page.nextPageToken,
  };
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

/** The id of a (user, secret) pair in the maps below: `user ref hex/secret id`. */
export const forUseId = (userRef: Uint8Array, secretId: string): string =>
  `${Buffer.from(userRef.buffer, userRef.byteOffset, userRef.byteLength).toString("hex")}/${secretId}`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * Whether `secretId` can name a secret at all (a uuid). One that cannot must never reach a batch
 * read: its cast would fail the whole statement, and with it every other call of the batch.
 */
export const canNameSecret = (secretId: string): boolean => UUID.test(secretId);

/** The parameters of `secretsForUseQuery` for `keys`: user refs as hex, then secret ids. */
export function secretsForUseParams(keys: readonly SecretForUseKey[]): [string[], string[]] {
  return [keys.map((k) => k.userRef.toString("hex")), keys.map((k) => k.secretId)];
}

/** The rows of `secretsForUseQuery` by `forUseId`; rows whose columns are null are skipped. */
export function secretsForUseById(rows: readonly SecretForUseRow[]): Map<string, SecretForUse> {
  const found = new Map<string, SecretForUse>();
  for (const row of rows) {
    if (row.id == null || row.ciphertext == null || row.owner_ref == null) continue;
    const full = row as SecretWithKeyRow & { ciphertext: Uint8Array; owner_ref: Uint8Array };
    found.set(forUseId(full.owner_ref, full.id), {
      secret: { ...toStoredSecret(full), ciphertext: full.ciphertext },
      userKey: toUserKey(full),
    });
  }
  return found;
}

/** Each requested secret that exists AND belongs to the user who asked, by `forUseId`. */
export async function findSecretsForUse(
  prepared: PreparedRunner,
  keys: readonly SecretForUseKey[],
): Promise<Map<string, SecretForUse>> {
  return secretsForUseById(await prepared.rows<SecretForUseRow>(FIND_FOR_USE, secretsForUseParams(keys)));
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
      canNameSecret(secretId) ? lookup.get({ userRef, secretId }) : Promise.resolve(undefined),
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
