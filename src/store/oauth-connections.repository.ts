import type { Kysely } from "kysely";
import type { Database } from "./schema.js";
import { type StoredConnection, toStoredConnection } from "./secrets.repository.js";

/** A connection's state with the version it describes, for the refresh path (issue 15 item 4). */
export interface ConnectionHead {
  readonly secretId: string;
  readonly provider: string;
  readonly version: number;
  readonly connection: StoredConnection;
  readonly refreshLeaseUntil: Date | null;
}

/**
 * Writes the connection state of version `version`; nothing if the secret has moved on to another
 * version (compare-and-set). Run it in the transaction that wrote the version.
 */
export async function setConnectionState(
  db: Kysely<Database>,
  secretId: string,
  version: number,
  state: StoredConnection,
): Promise<boolean> {
  const result = await db
    .updateTable("secrets")
    .set({
      oauth_status: state.status,
      oauth_expires_at: state.expiresAt,
      oauth_scopes: [...state.scopes],
      oauth_refresh_lease_until: null,
    })
    .where("id", "=", secretId)
    .where("current_version", "=", version)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** The user's connection; undefined if absent, another user's, or not a connection. */
export async function findConnection(
  db: Kysely<Database>,
  userRef: Uint8Array,
  secretId: string,
  options: { readonly forUpdate?: boolean } = {},
): Promise<ConnectionHead | undefined> {
  let query = db
    .selectFrom("secrets")
    .select([
      "id",
      "provider",
      "current_version",
      "oauth_status",
      "oauth_expires_at",
      "oauth_scopes",
      "oauth_refresh_lease_until",
    ])
    .where("id", "=", secretId)
    .where("user_ref", "=", userRef);
  if (options.forUpdate === true) query = query.forUpdate();
  const row = await query.executeTakeFirst();
  const connection = row === undefined ? null : toStoredConnection(row);
  if (row === undefined || connection === null) return undefined;
  return {
    secretId: row.id,
    provider: row.provider,
    version: row.current_version,
    connection,
    refreshLeaseUntil: row.oauth_refresh_lease_until,
  };
}

/** invalid_grant: the user must consent again. Only while `version` is current. */
export async function markNeedsReconsent(
  db: Kysely<Database>,
  secretId: string,
  version: number,
): Promise<boolean> {
  const result = await db
    .updateTable("secrets")
    .set({ oauth_status: "needs_reconsent", oauth_refresh_lease_until: null })
    .where("id", "=", secretId)
    .where("current_version", "=", version)
    .where("oauth_status", "is not", null)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/**
 * Takes the refresh lease of version `version` until `until`, unless another replica holds an
 * unexpired one: the single flight of a refresh without a transaction held over the HTTP call.
 */
export async function takeRefreshLease(
  db: Kysely<Database>,
  secretId: string,
  version: number,
  now: Date,
  until: Date,
): Promise<boolean> {
  const result = await db
    .updateTable("secrets")
    .set({ oauth_refresh_lease_until: until })
    .where("id", "=", secretId)
    .where("current_version", "=", version)
    .where("oauth_status", "=", "active")
    .where((eb) =>
      eb.or([eb("oauth_refresh_lease_until", "is", null), eb("oauth_refresh_lease_until", "<", now)]),
    )
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** Gives the lease back (a failed refresh), so the next use may try at once. */
export async function releaseRefreshLease(
  db: Kysely<Database>,
  secretId: string,
  version: number,
): Promise<void> {
  await db
    .updateTable("secrets")
    .set({ oauth_refresh_lease_until: null })
    .where("id", "=", secretId)
    .where("current_version", "=", version)
    .execute();
}
