import { type Kysely, sql } from "kysely";
import { asBuffer } from "./bytes.js";
import type { Database } from "./schema.js";

/**
 * Leases over disjoint user_ref ranges of one rewrap target (issue 17 item 4), and the rewrap's
 * share of the replica-wide rate-limit windows. A lease is held by one owner until it expires;
 * an expired lease (its holder crashed or stalled) is taken over by the next worker that asks.
 */

/** One leased range: user refs r with start <= r < end (no end: to the last one). */
export interface RewrapRange {
  readonly start: Buffer;
  readonly end: Buffer | undefined;
}

export interface RangeOwner {
  readonly targetKeyId: string;
  readonly owner: string;
}

/** Creates the ranges of `targetKeyId` from sorted `starts`; existing ones are left as they are. */
export async function ensureRewrapRanges(
  db: Kysely<Database>,
  targetKeyId: string,
  starts: readonly Buffer[],
): Promise<void> {
  await db
    .insertInto("rewrap_ranges")
    .values(
      starts.map((start, i) => ({
        target_key_id: targetKeyId,
        range_start: start,
        range_end: starts[i + 1] ?? null,
      })),
    )
    .onConflict((oc) => oc.columns(["target_key_id", "range_start"]).doNothing())
    .execute();
}

/**
 * Leases the first range that is neither done nor leased (or whose lease expired) for `ttlMs`.
 * `skip locked`: two workers asking at once get different ranges, never the same one.
 */
export async function leaseRewrapRange(
  db: Kysely<Database>,
  lease: RangeOwner & { readonly ttlMs: number },
): Promise<RewrapRange | undefined> {
  const result = await sql<{ range_start: Uint8Array; range_end: Uint8Array | null }>`
    update rewrap_ranges r
       set owner = ${lease.owner},
           lease_expires_at = now() + ${lease.ttlMs}::integer * interval '1 millisecond'
     where r.target_key_id = ${lease.targetKeyId}
       and r.range_start = (
         select range_start from rewrap_ranges
          where target_key_id = ${lease.targetKeyId}
            and done_at is null
            and (owner is null or lease_expires_at < now())
          order by range_start
          limit 1
          for update skip locked)
    returning r.range_start, r.range_end`.execute(db);
  const row = result.rows[0];
  return (
    row && {
      start: asBuffer(row.range_start),
      end: row.range_end === null ? undefined : asBuffer(row.range_end),
    }
  );
}

/** Extends the owner's lease; false when it is no longer the owner (it expired and was taken). */
export async function renewRewrapRange(
  db: Kysely<Database>,
  lease: RangeOwner & { readonly start: Buffer; readonly ttlMs: number },
): Promise<boolean> {
  const result = await db
    .updateTable("rewrap_ranges")
    .set({ lease_expires_at: sql`now() + ${lease.ttlMs}::integer * interval '1 millisecond'` })
    .where("target_key_id", "=", lease.targetKeyId)
    .where("range_start", "=", lease.start)
    .where("owner", "=", lease.owner)
    .where("done_at", "is", null)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** Marks the owner's range done (`done`) or hands it back undone (a graceful stop). */
export async function settleRewrapRange(
  db: Kysely<Database>,
  lease: RangeOwner & { readonly start: Buffer; readonly done: boolean },
): Promise<void> {
  await db
    .updateTable("rewrap_ranges")
    .set({ owner: null, lease_expires_at: null, ...(lease.done ? { done_at: sql`now()` } : {}) })
    .where("target_key_id", "=", lease.targetKeyId)
    .where("range_start", "=", lease.start)
    .where("owner", "=", lease.owner)
    .execute();
}

/** Ranges not done yet, and those of them another worker holds a live lease on. */
export async function countOpenRewrapRanges(
  db: Kysely<Database>,
  targetKeyId: string,
): Promise<{ open: number; leased: number }> {
  const result = await sql<{ open: string | number | bigint; leased: string | number | bigint }>`
    select count(*) as open,
           count(*) filter (where owner is not null and lease_expires_at >= now()) as leased
      from rewrap_ranges
     where target_key_id = ${targetKeyId} and done_at is null`.execute(db);
  const row = result.rows[0];
  return { open: Number(row?.open ?? 0), leased: Number(row?.leased ?? 0) };
}

/** Opens every done range of the target again, for another pass (rows appeared behind the walk). */
export async function reopenRewrapRanges(db: Kysely<Database>, targetKeyId: string): Promise<void> {
  await db
    .updateTable("rewrap_ranges")
    .set({ done_at: null })
    .where("target_key_id", "=", targetKeyId)
    .where("done_at", "is not", null)
    .execute();
}

/**
 * Deletes the ranges of `targetKeyId` once every one of them is done (a finished rewrap), in one
 * statement; returns how many rows went. A target with any range not done (a stopped run, a
 * worker still walking) keeps all of its rows, so a later run resumes where this one stopped.
 * Each row must itself still be done when it is deleted: a range reopened meanwhile by another
 * job's next pass (its update committed while this statement waited on the row) is kept, so a
 * pass in flight never loses its ranges half-way.
 */
export async function deleteFinishedRewrapRanges(db: Kysely<Database>, targetKeyId: string): Promise<number> {
  const result = await sql`
    delete from rewrap_ranges r
     where r.target_key_id = ${targetKeyId}
       and r.done_at is not null
       and not exists (
         select 1 from rewrap_ranges o
          where o.target_key_id = ${targetKeyId} and o.done_at is null)`.execute(db);
  return Number(result.numAffectedRows ?? 0n);
}

/**
 * Takes up to `block` tokens of the window starting at `windowStart` (ms since the epoch) from the
 * counter every worker of the job shares (rate_limit_leases, as the proxy's shared limits do), never
 * letting it pass `limit`. Returns how many it took: 0 when the window is spent.
 */
export async function leaseRewrapRateTokens(
  db: Kysely<Database>,
  lease: {
    readonly bucket: string;
    readonly windowStart: number;
    readonly block: number;
    readonly limit: number;
  },
): Promise<number> {
  const { bucket, windowStart, block, limit } = lease;
  const result = await sql<{ last_grant: number }>`
    insert into rate_limit_leases as l (bucket, window_start, used, last_grant)
    values (${bucket}, ${windowStart}, least(${block}::int, ${limit}::int), least(${block}::int, ${limit}::int))
    on conflict (bucket, window_start) do update
       set used = l.used + least(${block}::int, ${limit}::int - l.used),
           last_grant = least(${block}::int, ${limit}::int - l.used)
     where l.used < ${limit}::int
    returning last_grant`.execute(db);
  return Math.max(0, result.rows[0]?.last_grant ?? 0);
}

/** Deletes the job's rate windows that started before `before` (ms since the epoch). */
export async function deleteRewrapRateWindows(
  db: Kysely<Database>,
  bucket: string,
  before: number,
): Promise<void> {
  await db
    .deleteFrom("rate_limit_leases")
    .where("bucket", "=", bucket)
    .where("window_start", "<", before)
    .execute();
}
