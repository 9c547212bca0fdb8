import { setTimeout as sleepFor } from "node:timers/promises";
import type { Kysely } from "kysely";
import type { Logger } from "../log/logger.js";
import type { WrappedUserKey } from "../store/rewrap.repository.js";
import {
  countOpenRewrapRanges,
  leaseRewrapRange,
  type RewrapRange,
  renewRewrapRange,
  settleRewrapRange,
} from "../store/rewrap-ranges.repository.js";
import type { Database } from "../store/schema.js";
import { createRewrapRowSource, type RewrapRowSource } from "./rewrap-row-source.js";

/**
 * Rows of leased ranges (issue 17 item 4). The user_ref space is cut into disjoint ranges
 * (rewrap_ranges); this worker leases one at a time, walks it, marks it done and leases the next.
 * The lease is renewed before every page and on a timer; a worker that crashes stops renewing and
 * its range goes to whoever asks after the lease expired. A walk skips rows already on the target,
 * so a range taken over is only finished, not redone. When every free range is gone but others
 * still hold live leases, the worker waits: a holder that died leaves its range to it.
 */
export interface LeasedRowSourceOptions {
  readonly db: Kysely<Database>;
  readonly logger: Logger;
  readonly targetKeyId: string;
  /** This worker's name in the leases (no user, nothing secret). */
  readonly owner: string;
  readonly leaseTtlMs: number;
  readonly batchSize: number;
  /** Users (hex) not to offer again: rows that failed earlier in this run. */
  readonly exclude: ReadonlySet<string>;
  /** True once the job is stopping: no new range is leased. */
  readonly stopping: () => boolean;
  readonly signal?: AbortSignal | undefined;
}

export interface LeasedRowSource {
  readonly next: RewrapRowSource;
  /**
   * Every row `next` handed out must be reported here once it is settled (moved, skipped, failed
   * or abandoned): a range is marked done only after its last row settled, so no other worker
   * can ever pick up a row still in flight here (a later pass reopens only done ranges).
   */
  settled(row: WrappedUserKey): void;
  /** Hands the range held now back undone (graceful stop, failure) so another worker can take it at once. */
  release(): Promise<void>;
}

interface Held {
  readonly range: RewrapRange;
  readonly rows: RewrapRowSource;
  lost: boolean;
  /** Rows handed out and not yet settled. */
  inFlight: number;
  drained: (() => void) | undefined;
}

export function createLeasedRowSource(options: LeasedRowSourceOptions): LeasedRowSource {
  const { db, targetKeyId, owner, leaseTtlMs } = options;
  const pollMs = Math.max(10, Math.min(1_000, Math.floor(leaseTtlMs / 4)));
  let held: Held | undefined;
  let finished = false;
  let advancing: Promise<void> | undefined;
  let renewTimer: NodeJS.Timeout | undefined;
  const heldOf = new WeakMap<WrappedUserKey, Held>();

  async function renew(current: Held): Promise<boolean> {
    if (current.lost) return false;
    const mine = await renewRewrapRange(db, {
      targetKeyId,
      owner,
      start: current.range.start,
      ttlMs: leaseTtlMs,
    });
    if (!mine) {
      current.lost = true;
      options.logger.warn("a rewrap range lease expired and was taken by another worker; moving on");
    }
    return mine;
  }

  function hold(range: RewrapRange): void {
    const current: Held = {
      range,
      lost: false,
      inFlight: 0,
      drained: undefined,
      rows: createRewrapRowSource(db, {
        targetKeyId,
        batchSize: options.batchSize,
        exclude: options.exclude,
        from: range.start,
        before: range.end,
        beforePage: () => renew(current),
      }),
    };
    held = current;
    clearInterval(renewTimer);
    // Pages can take longer than the lease when the rate is low: renew on a timer as well.
    renewTimer = setInterval(
      () => {
        if (held === current) renew(current).catch(() => undefined);
      },
      Math.max(5, Math.floor(leaseTtlMs / 3)),
    );
    renewTimer.unref();
  }

  async function advance(): Promise<void> {
    const done = held;
    held = undefined;
    clearInterval(renewTimer);
    if (done !== undefined && !done.lost) {
      if (done.inFlight > 0) {
        // Keep renewing until the range's last rows are written, then mark it done.
        const renewing = setInterval(
          () => void renew(done).catch(() => undefined),
          Math.max(5, Math.floor(leaseTtlMs / 3)),
        );
        renewing.unref();
        await new Promise<void>((resolve) => {
          done.drained = resolve;
        });
        clearInterval(renewing);
      }
      if (!done.lost)
        await settleRewrapRange(db, { targetKeyId, owner, start: done.range.start, done: true });
    }
    while (!options.stopping()) {
      const range = await leaseRewrapRange(db, { targetKeyId, owner, ttlMs: leaseTtlMs });
      if (range !== undefined) {
        hold(range);
        return;
      }
      const { open } = await countOpenRewrapRanges(db, targetKeyId);
      if (open === 0) break;
      // Others hold the rest: wait until they finish, or until a lease expires and is ours to take.
      try {
        await sleepFor(pollMs, undefined, options.signal === undefined ? {} : { signal: options.signal });
      } catch {
        break; // stopped
      }
    }
    finished = true;
  }

  return {
    async next() {
      for (;;) {
        const current = held;
        if (current !== undefined && !current.lost) {
          const row = await current.rows();
          if (row !== undefined && !current.lost) {
            current.inFlight += 1;
            heldOf.set(row, current);
            return row;
          }
        }
        if (finished || options.stopping()) return undefined;
        if (held === current) {
          advancing ??= advance().finally(() => {
            advancing = undefined;
          });
        }
        await advancing;
      }
    },
    settled(row) {
      const owner = heldOf.get(row);
      if (owner === undefined) return;
      heldOf.delete(row);
      owner.inFlight -= 1;
      if (owner.inFlight === 0) owner.drained?.();
    },
    async release() {
      clearInterval(renewTimer);
      finished = true;
      const current = held;
      held = undefined;
      if (current !== undefined && !current.lost) {
        await settleRewrapRange(db, { targetKeyId, owner, start: current.range.start, done: false });
      }
    },
  };
}

/** `count` range starts evenly cutting the user_ref space (HMAC output, so evenly filled). */
export function rewrapRangeStarts(count: number): Buffer[] {
  const starts: Buffer[] = [];
  for (let i = 0; i < count; i += 1) {
    // Two-byte prefixes; the first range starts at the empty string, below every ref.
    const prefix = Math.floor((i * 65_536) / count);
    starts.push(i === 0 ? Buffer.alloc(0) : Buffer.from([prefix >> 8, prefix & 0xff]));
  }
  return starts;
}
