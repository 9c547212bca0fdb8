import { BrokerError, untilAborted } from "../errors.js";
import type { Logger } from "../log/logger.js";

/** One fixed-window counter a call draws a token from. */
export interface RateLimitBucket {
  /** The counter's name, shared by every replica (a secret or caller key id, never a user). */
  readonly key: string;
  /** Calls allowed per window, across all replicas. */
  readonly limit: number;
  readonly windowMs: number;
  /** Whose limit it is, for the refusal's message: "this secret", "this caller key". */
  readonly what: string;
}

/** The shared counters (Postgres: rate-limit-leases.repository.ts). */
export interface RateLimitStore {
  /** Takes up to `block` tokens of `bucket`'s window, never past `limit`; how many it took (0: spent). */
  lease(bucket: string, windowStart: number, block: number, limit: number): Promise<number>;
  /** Forgets windows that started before `before`. */
  sweep(before: number): Promise<void>;
}

export interface CallRateLimiter {
  /**
   * Takes one token from every bucket, or from none. Refuses `resource_exhausted` with
   * `retryAfterMs` (sent as google.rpc.RetryInfo) when a window's limit is spent. Returns
   * undefined when the replica's leased blocks could serve the call: no promise, no statement.
   */
  take(buckets: readonly RateLimitBucket[], signal: AbortSignal): Promise<void> | undefined;
}

interface Window {
  readonly start: number;
  readonly end: number;
  /** Tokens this replica leased for the window and has not handed out yet. */
  remaining: number;
  /** The shared counter is at the limit: refuse until the window ends, without asking again. */
  spent: boolean;
  /** The next lease's size: doubles while this replica keeps draining blocks. */
  nextBlock: number;
  /** The lease in flight; concurrent calls wait for it instead of sending their own. */
  leasing: Promise<void> | undefined;
  /** Calls waiting for a lease: the next lease asks for at least this many (up to a block). */
  waiters: number;
  /** The one local block a window may grant itself when the store cannot be reached. */
  fallbackUsed: boolean;
  /** After a failed lease, no new attempt before this time (no statement per call in an outage). */
  retryStoreAt: number;
}

// Leases waited for per call at most. Leases are sized to the calls waiting (up to a block), and
// each round either gets tokens or learns the window is spent, so a call only runs out of rounds
// when tens of thousands wait at once; it is then refused as over the limit.
const MAX_LEASE_ROUNDS = 64;
const STORE_RETRY_MS = 1_000;
const LOCAL_SWEEP_MS = 60_000;
const STORE_SWEEP_MS = 10 * 60_000;
// Windows are at most an hour; counters are kept a while longer for operators to look at.
const STORE_KEEP_MS = 2 * 60 * 60_000;

/** The first lease of a window: small, so a replica that sees few calls wastes few tokens. */
export const firstBlockOf = (limit: number): number => Math.max(1, Math.ceil(limit / 100));
/** The largest lease: what one replica may hold unused, and its fallback allowance in an outage. */
export const maxBlockOf = (limit: number): number => Math.max(1, Math.min(1_000, Math.floor(limit / 10)));

/**
 * Fixed-window rate limits shared by every replica without a statement per call (issue 13 item 6).
 * Each replica leases blocks of tokens for a (bucket, window) from one shared counter with one
 * upsert, and serves calls from its block in memory. The counter never passes the limit, so
 * within one window the calls admitted across all replicas never exceed it: the overshoot is 0.
 * What that costs is the other way: tokens a replica leased but did not use are lost when the
 * window ends, so a caller may be refused while another replica still holds up to one block.
 *
 * If the store fails (Postgres unreachable, a timeout), a replica grants itself one block per
 * bucket and window from memory, then refuses UNAVAILABLE until the store answers again: a
 * conservative local limit rather than no limit (fail open) or no service (fail closed). In that
 * state the overshoot is at most one maximum block per replica and window.
 */
export function createCallRateLimiter(deps: {
  store: RateLimitStore;
  logger: Logger;
  /** Wall-clock ms; replicas number windows from it, so their clocks should agree (NTP). */
  now?: () => number;
}): CallRateLimiter {
  const now = deps.now ?? Date.now;
  const windows = new Map<string, Window>();
  let nextLocalSweep = 0;
  let nextStoreSweep = 0;

  function windowOf(bucket: RateLimitBucket, at: number): Window {
    const start = at - (at % bucket.windowMs);
    const current = windows.get(bucket.key);
    if (current !== undefined && current.start === start) return current;
    const fresh: Window = {
      start,
      end: start + bucket.windowMs,
      remaining: 0,
      spent: false,
      nextBlock: firstBlockOf(bucket.limit),
      leasing: undefined,
      waiters: 0,
      fallbackUsed: false,
      retryStoreAt: 0,
    };
    windows.set(bucket.key, fresh);
    return fresh;
  }

  /** Gives a token back to the window it came from (a later bucket refused the call). */
  function giveBack(bucket: RateLimitBucket, start: number): void {
    const window = windows.get(bucket.key);
    if (window !== undefined && window.start === start) window.remaining++;
  }

  async function lease(bucket: RateLimitBucket, window: Window): Promise<void> {
    const block = Math.min(maxBlockOf(bucket.limit), Math.max(window.nextBlock, window.waiters));
    let granted: number;
    try {
      granted = await deps.store.lease(bucket.key, window.start, block, bucket.limit);
    } catch (err) {
      if (!window.fallbackUsed) {
        window.fallbackUsed = true;
        window.remaining += block;
        deps.logger.warn({ err, block }, "rate limit: shared counter unreachable; serving one local block");
      } else {
        window.retryStoreAt = now() + STORE_RETRY_MS;
        deps.logger.warn({ err }, "rate limit: shared counter unreachable; refusing until it answers");
      }
      return;
    }
    if (granted === 0) {
      window.spent = true;
      return;
    }
    window.remaining += granted;
    window.nextBlock = Math.min(maxBlockOf(bucket.limit), block * 2);
  }

  function exhausted(bucket: RateLimitBucket, window: Window, at: number): BrokerError {
    return new BrokerError("resource_exhausted", `rate limit reached for ${bucket.what}; retry later`, {
      retryAfterMs: Math.max(1, window.end - at),
    });
  }

  /** One token of `bucket`, leasing as needed; resolves with the window it came from. */
  async function takeOne(bucket: RateLimitBucket, signal: AbortSignal): Promise<number> {
    for (let round = 0; round < MAX_LEASE_ROUNDS; round++) {
      const at = now();
      const window = windowOf(bucket, at);
      if (window.remaining > 0) {
        window.remaining--;
        return window.start;
      }
      if (window.spent) throw exhausted(bucket, window, at);
      if (at < window.retryStoreAt) {
        throw new BrokerError("unavailable", "rate limit state is unreachable; retry later");
      }
      // Counted before a lease starts, so the lease is sized for every call waiting on it.
      window.waiters++;
      window.leasing ??= lease(bucket, window).finally(() => {
        window.leasing = undefined;
      });
      try {
        await untilAborted(window.leasing, signal, abortedError);
      } finally {
        window.waiters--;
      }
    }
    // Concurrent calls drained every block this call waited for: it is, in effect, over the limit.
    const at = now();
    throw exhausted(bucket, windowOf(bucket, at), at);
  }

  async function takeAll(buckets: readonly RateLimitBucket[], signal: AbortSignal): Promise<void> {
    sweep();
    const taken: number[] = [];
    try {
      for (const bucket of buckets) taken.push(await takeOne(bucket, signal));
    } catch (err) {
      taken.forEach((start, i) => {
        const bucket = buckets[i];
        if (bucket !== undefined) giveBack(bucket, start);
      });
      throw err;
    }
  }

  /** Drops ended windows from memory, and now and then from the store (best effort). */
  function sweep(): void {
    const at = now();
    if (at >= nextLocalSweep) {
      nextLocalSweep = at + LOCAL_SWEEP_MS;
      for (const [key, window] of windows) {
        if (window.leasing === undefined && window.end <= at) windows.delete(key);
      }
    }
    if (at >= nextStoreSweep) {
      nextStoreSweep = at + STORE_SWEEP_MS;
      deps.store
        .sweep(at - STORE_KEEP_MS)
        .catch((err: unknown) => deps.logger.warn({ err }, "rate limit: could not sweep old windows"));
    }
  }

  return {
    take(buckets, signal) {
      // The hot path: every bucket has a token left in this replica's block.
      const at = now();
      let served = 0;
      for (const bucket of buckets) {
        const window = windows.get(bucket.key);
        if (window === undefined || window.remaining === 0 || at >= window.end) break;
        window.remaining--;
        served++;
      }
      if (served === buckets.length) return undefined;
      for (let i = 0; i < served; i++) {
        const bucket = buckets[i];
        if (bucket !== undefined) giveBack(bucket, at - (at % bucket.windowMs));
      }
      return takeAll(buckets, signal);
    },
  };
}

function abortedError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new BrokerError("unavailable", "call cancelled");
}
