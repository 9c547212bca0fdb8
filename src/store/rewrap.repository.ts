import { type Kysely, sql } from "kysely";
import { asBuffer } from "./bytes.js";
import type { Database } from "./schema.js";

/**
 * Queries of master-key rotation (the rewrap job) and of per-user data-key rotation.
 * Wrapped keys and ciphertexts are opaque bytes here: store/ never decrypts.
 */

/** A user's wrapped data key, addressed by its row for a compare-and-set. */
export interface WrappedUserKey {
  readonly userRef: Buffer;
  readonly wrappedDataKey: Buffer;
  readonly masterKeyId: string;
}

/** How many users' data keys each master key wraps. */
export async function countUsersByMasterKey(
  db: Kysely<Database>,
  excludingKeyId?: string,
): Promise<Map<string, number>> {
  let query = db
    .selectFrom("users")
    .select(["master_key_id", (eb) => eb.fn.countAll<string | number | bigint>().as("n")])
    .groupBy("master_key_id")
    .orderBy("master_key_id");
  if (excludingKeyId !== undefined) query = query.where("master_key_id", "<>", excludingKeyId);
  const rows = await query.execute();
  return new Map(rows.map((row) => [row.master_key_id, Number(row.n)]));
}

/**
 * The next page of users whose data key is not wrapped under `targetKeyId`, in user_ref
 * order after `after` (keyset pagination: each page is an index range scan, however far in).
 */
export async function findUsersNotOnKey(
  db: Kysely<Database>,
  page: {
    readonly targetKeyId: string;
    readonly after: Buffer | undefined;
    readonly limit: number;
    /** A leased range's bounds: from (inclusive, used while `after` is unset) and before (exclusive). */
    readonly from?: Buffer | undefined;
    readonly before?: Buffer | undefined;
  },
): Promise<WrappedUserKey[]> {
  let query = db
    .selectFrom("users")
    .select(["user_ref", "wrapped_data_key", "master_key_id"])
    .where("master_key_id", "<>", page.targetKeyId)
    .orderBy("user_ref")
    .limit(page.limit);
  if (page.after !== undefined) query = query.where("user_ref", ">", page.after);
  else if (page.from !== undefined) query = query.where("user_ref", ">=", page.from);
  if (page.before !== undefined) query = query.where("user_ref", "<", page.before);
  const rows = await query.execute();
  return rows.map((row) => ({
    userRef: asBuffer(row.user_ref),
    wrappedDataKey: asBuffer(row.wrapped_data_key),
    masterKeyId: row.master_key_id,
  }));
}

/** One user's wrapped key as stored now; undefined if the user is gone (shredded). */
export async function findWrappedUserKey(
  db: Kysely<Database>,
  userRef: Buffer,
): Promise<WrappedUserKey | undefined> {
  const row = await db
    .selectFrom("users")
    .select(["wrapped_data_key", "master_key_id"])
    .where("user_ref", "=", userRef)
    .executeTakeFirst();
  return row && { userRef, wrappedDataKey: asBuffer(row.wrapped_data_key), masterKeyId: row.master_key_id };
}

/** A rewrapped data key to store, if the row still holds `expected`. */
export interface UserKeyChange {
  readonly userRef: Buffer;
  readonly expected: Buffer;
  readonly wrappedDataKey: Uint8Array;
  readonly masterKeyId: string;
}

/**
 * Stores rewrapped data keys, each only if its row still holds the key that was rewrapped:
 * a concurrent change (a data-key rotation) is never overwritten. One statement for many
 * rows; returns the user refs (hex) that were written, the others changed meanwhile.
 */
export async function compareAndSetUserKeys(
  db: Kysely<Database>,
  changes: readonly UserKeyChange[],
): Promise<Set<string>> {
  if (changes.length === 0) return new Set();
  const values = sql.join(
    changes.map(
      (c) =>
        sql`(${c.userRef}::bytea, ${c.expected}::bytea, ${asBuffer(c.wrappedDataKey)}::bytea, ${c.masterKeyId}::text)`,
    ),
  );
  const result = await sql<{ user_ref: Uint8Array }>`
    update users u
       set wrapped_data_key = c.wrapped_data_key, master_key_id = c.master_key_id, updated_at = now()
      from (values ${values}) as c (user_ref, expected, wrapped_data_key, master_key_id)
     where u.user_ref = c.user_ref and u.wrapped_data_key = c.expected
    returning u.user_ref`.execute(db);
  return new Set(result.rows.map((row) => asBuffer(row.user_ref).toString("hex")));
}

/** compareAndSetUserKeys for a broker_state row (the sealed pepper). */
export async function compareAndSetBrokerState(
  db: Kysely<Database>,
  change: {
    readonly name: string;
    readonly expected: Buffer;
    readonly wrapped: Uint8Array;
    readonly masterKeyId: string;
  },
): Promise<boolean> {
  const result = await db
    .updateTable("broker_state")
    .set({
      wrapped_value: asBuffer(change.wrapped),
      master_key_id: change.masterKeyId,
      updated_at: sql`now()`,
    })
    .where("name", "=", change.name)
    .where("wrapped_value", "=", change.expected)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** One stored version of one of a user's secrets, with what its AAD binds and its secret's head. */
export interface SealedSecretVersion {
  readonly secretId: string;
  readonly provider: string;
  readonly version: number;
  readonly ciphertext: Buffer;
  readonly hintCiphertext: Buffer;
  /** The secret's current version and the head MAC pinning it (null: not yet bound, catalogue L1). */
  readonly currentVersion: number;
  readonly headMac: Buffer | null;
  /** The grant the head binds (issue 13); null for a secret stored before grants. */
  readonly grant: readonly string[] | null;
}

/** Every version of every secret of the user (not only the current ones). */
export async function listUserSecretVersions(
  db: Kysely<Database>,
  userRef: Buffer,
): Promise<SealedSecretVersion[]> {
  const rows = await db
    .selectFrom("secret_versions as v")
    .innerJoin("secrets as s", "s.id", "v.secret_id")
    .select([
      "v.secret_id",
      "s.provider",
      "v.version",
      "v.ciphertext",
      "v.hint_ciphertext",
      "s.current_version",
      "s.head_mac",
      "s.operation_grant",
    ])
    .where("s.user_ref", "=", userRef)
    .orderBy("v.secret_id")
    .orderBy("v.version")
    .execute();
  return rows.map((row) => ({
    secretId: row.secret_id,
    provider: row.provider,
    version: row.version,
    ciphertext: asBuffer(row.ciphertext),
    hintCiphertext: asBuffer(row.hint_ciphertext),
    currentVersion: row.current_version,
    headMac: row.head_mac === null ? null : asBuffer(row.head_mac),
    grant: row.operation_grant,
  }));
}

export interface ReplacedUserDataKey {
  readonly userRef: Buffer;
  readonly wrappedDataKey: Uint8Array;
  readonly masterKeyId: string;
  /** AES-GCM encryptions made so far under the new key (the re-seals). */
  readonly encryptions: number;
  readonly versions: ReadonlyArray<{
    readonly secretId: string;
    readonly version: number;
    readonly ciphertext: Buffer;
    readonly hintCiphertext: Buffer;
  }>;
  /** Each secret's head MAC under the new key (catalogue L1), written with the versions. */
  readonly heads: ReadonlyArray<{ readonly secretId: string; readonly headMac: Buffer }>;
}

/**
 * Swaps the user's data key, every re-sealed version and every secret's head in ONE statement, so no reader,
 * even one sharing PGlite's single connection mid-transaction, sees new ciphertexts next
 * to the old key. Returns the new data_key_version and how many versions were replaced.
 */
export async function replaceUserDataKey(
  db: Kysely<Database>,
  change: ReplacedUserDataKey,
): Promise<{ dataKeyVersion: number; versionsReplaced: number } | undefined> {
  const setUser = sql`
    update users
       set wrapped_data_key = ${asBuffer(change.wrappedDataKey)},
           master_key_id = ${change.masterKeyId},
           data_key_version = data_key_version + 1,
           encryptions = ${change.encryptions},
           updated_at = now()
     where user_ref = ${change.userRef}`;
  if (change.versions.length === 0) {
    const result = await sql<{ data_key_version: number }>`${setUser} returning data_key_version`.execute(db);
    const row = result.rows[0];
    return row && { dataKeyVersion: row.data_key_version, versionsReplaced: 0 };
  }
  const values = sql.join(
    change.versions.map(
      (v) =>
        sql`(${v.secretId}::uuid, ${v.version}::integer, ${v.ciphertext}::bytea, ${v.hintCiphertext}::bytea)`,
    ),
  );
  // Heads come from the same version list, so there is at least one whenever there are versions.
  const heads = sql.join(change.heads.map((h) => sql`(${h.secretId}::uuid, ${h.headMac}::bytea)`));
  const result = await sql<{ data_key_version: number; replaced: number | string | bigint }>`
    with resealed (secret_id, version, ciphertext, hint_ciphertext) as (values ${values}),
    replaced as (
      update secret_versions v
         set ciphertext = r.ciphertext, hint_ciphertext = r.hint_ciphertext
        from resealed r
       where v.secret_id = r.secret_id and v.version = r.version
      returning 1
    ),
    rebound as (
      update secrets s
         set head_mac = h.head_mac
        from (values ${heads}) as h (secret_id, head_mac)
       where s.id = h.secret_id and s.user_ref = ${change.userRef}
      returning 1
    )
    ${setUser}
    returning data_key_version, (select count(*) from replaced) as replaced`.execute(db);
  const row = result.rows[0];
  return row && { dataKeyVersion: row.data_key_version, versionsReplaced: Number(row.replaced) };
}
