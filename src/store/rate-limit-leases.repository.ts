import type { Kysely } from "kysely";
import type { PreparedRunner, PreparedStatement } from "./prepared.js";
import type { Database } from "./schema.js";

// One statement per lease: the row for (bucket, window) is created or moved under its own row
// lock, so concurrent replicas serialise on it and `used` never passes $4 (the limit). A lease
// takes min($3, limit - used) tokens; when none are left the WHERE matches nothing and no row
// comes back. `last_grant` returns what this very statement took (the row is locked until it ends).
const LEASE: PreparedStatement = {
  name: "kb_rate_limit_lease",
  text: `
    insert into rate_limit_leases as l (bucket, window_start, used, last_grant)
    values ($1, $2, least($3::int, $4::int), least($3::int, $4::int))
    on conflict (bucket, window_start) do update
       set used = l.used + least($3::int, $4::int - l.used),
           last_grant = least($3::int, $4::int - l.used)
     where l.used < $4::int
    returning last_grant`,
};

/**
 * Takes up to `block` tokens from the shared counter of `bucket` in the window starting at
 * `windowStart` (ms since the epoch), never letting it pass `limit`. Returns how many it took:
 * 0 when the window's limit is spent.
 */
export async function leaseRateLimitTokens(
  runner: PreparedRunner,
  bucket: string,
  windowStart: number,
  block: number,
  limit: number,
): Promise<number> {
  const [row] = await runner.rows<{ last_grant: number }>(LEASE, [bucket, windowStart, block, limit]);
  return row === undefined ? 0 : Math.max(0, row.last_grant);
}

/** Deletes the counters of windows that started before `before` (ms since the epoch). */
export async function deleteRateLimitLeasesBefore(db: Kysely<Database>, before: number): Promise<void> {
  await db.deleteFrom("rate_limit_leases").where("window_start", "<", before).execute();
}

/** Tokens leased so far in one window (for tests and operators). */
export async function rateLimitTokensUsed(
  db: Kysely<Database>,
  bucket: string,
  windowStart: number,
): Promise<number> {
  const row = await db
    .selectFrom("rate_limit_leases")
    .select("used")
    .where("bucket", "=", bucket)
    .where("window_start", "=", windowStart)
    .executeTakeFirst();
  return row?.used ?? 0;
}
