import type { Kysely } from "kysely";
import { asBuffer } from "./bytes.js";
import type { Database } from "./schema.js";

/** One provider's OAuth client registration, still sealed. */
export interface StoredOAuthApp {
  readonly provider: string;
  readonly version: number;
  readonly clientId: string;
  readonly wrappedKey: Uint8Array;
  readonly masterKeyId: string;
  readonly secretCiphertext: Uint8Array;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

export async function findOAuthApp(
  db: Kysely<Database>,
  provider: string,
): Promise<StoredOAuthApp | undefined> {
  const row = await db
    .selectFrom("oauth_apps")
    .selectAll()
    .where("provider", "=", provider)
    .executeTakeFirst();
  return row === undefined ? undefined : toStored(row);
}

export async function listOAuthApps(db: Kysely<Database>): Promise<StoredOAuthApp[]> {
  const rows = await db.selectFrom("oauth_apps").selectAll().orderBy("provider").execute();
  return rows.map(toStored);
}

/**
 * Writes version `app.version`: an insert when it is 1, else a compare-and-set over version - 1,
 * so two operators rotating at once cannot both win. Returns whether this write was stored.
 */
export async function writeOAuthApp(
  db: Kysely<Database>,
  app: Omit<StoredOAuthApp, "createdAt" | "updatedAt">,
  at: Date,
): Promise<boolean> {
  const values = {
    version: app.version,
    client_id: app.clientId,
    wrapped_key: app.wrappedKey,
    master_key_id: app.masterKeyId,
    secret_ciphertext: app.secretCiphertext,
    updated_at: at,
  };
  if (app.version === 1) {
    const inserted = await db
      .insertInto("oauth_apps")
      .values({ provider: app.provider, ...values, created_at: at })
      .onConflict((oc) => oc.column("provider").doNothing())
      .executeTakeFirst();
    return (inserted.numInsertedOrUpdatedRows ?? 0n) > 0n;
  }
  const updated = await db
    .updateTable("oauth_apps")
    .set(values)
    .where("provider", "=", app.provider)
    .where("version", "=", app.version - 1)
    .executeTakeFirst();
  return updated.numUpdatedRows > 0n;
}

/** How many OAuth apps' data keys each master key wraps (`keys status`, the rewrap plan). */
export async function countOAuthAppsByMasterKey(
  db: Kysely<Database>,
  excludingKeyId?: string,
): Promise<Map<string, number>> {
  let query = db
    .selectFrom("oauth_apps")
    .select(["master_key_id", (eb) => eb.fn.countAll<string | number | bigint>().as("n")])
    .groupBy("master_key_id")
    .orderBy("master_key_id");
  if (excludingKeyId !== undefined) query = query.where("master_key_id", "<>", excludingKeyId);
  const rows = await query.execute();
  return new Map(rows.map((row) => [row.master_key_id, Number(row.n)]));
}

/** The apps whose data key is not wrapped under `targetKeyId` (one row per provider: few). */
export async function findOAuthAppsNotOnKey(
  db: Kysely<Database>,
  targetKeyId: string,
): Promise<StoredOAuthApp[]> {
  const rows = await db
    .selectFrom("oauth_apps")
    .selectAll()
    .where("master_key_id", "<>", targetKeyId)
    .orderBy("provider")
    .execute();
  return rows.map(toStored);
}

/**
 * Stores an app's rewrapped data key only if the row is still the version under the master key
 * that was rewrapped: a concurrent `oauth-apps rotate` (a new version) is never overwritten. The
 * secret's ciphertext and updated_at stay: the secret did not change.
 */
export async function compareAndSetOAuthAppKey(
  db: Kysely<Database>,
  change: {
    readonly provider: string;
    readonly version: number;
    readonly expectedMasterKeyId: string;
    readonly wrappedKey: Uint8Array;
    readonly masterKeyId: string;
  },
): Promise<boolean> {
  const result = await db
    .updateTable("oauth_apps")
    .set({ wrapped_key: asBuffer(change.wrappedKey), master_key_id: change.masterKeyId })
    .where("provider", "=", change.provider)
    .where("version", "=", change.version)
    .where("master_key_id", "=", change.expectedMasterKeyId)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

function toStored(row: {
  provider: string;
  version: number;
  client_id: string;
  wrapped_key: Uint8Array;
  master_key_id: string;
  secret_ciphertext: Uint8Array;
  created_at: Date;
  updated_at: Date;
}): StoredOAuthApp {
  return {
    provider: row.provider,
    version: row.version,
    clientId: row.client_id,
    wrappedKey: row.wrapped_key,
    masterKeyId: row.master_key_id,
    secretCiphertext: row.secret_ciphertext,
    createdAt: row.created_at,
    updatedAt: row.updated_at,
  };
}
