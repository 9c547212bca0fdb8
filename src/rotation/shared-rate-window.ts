import { setTimeout as sleepFor } from "node:timers/promises";
import type { Kysely } from "kysely";
import { BrokerError } from "../errors.js";
import { leaseRewrapRateTokens } from "../store/rewrap-ranges.repository.js";
import type { Database } from "../store/schema.js";
import type { RateLimiter } from "./rate-limiter.js";

/**
 * The rewrap's total rate, shared by every worker process of the job (issue 17 item 4): each
 * one-second window has `ratePerSecond` tokens in the database (rate_limit_leases, bucket named
 * after the target key), and workers lease them in small blocks, so N workers together never
 * spend more than the rate, whoever runs them. Windows follow each host's clock: hosts whose
 * clocks disagree by d share a window for 1 - d seconds, the same bound the proxy's shared
 * limits accept.
 */
export interface SharedRateWindowDeps {
  readonly db: Kysely<Database>;
  /** The job's counter (e.g. "rewrap:<target key id>"): no user, nothing secret. */
  readonly bucket: string;
  readonly ratePerSecond: number;
  /** Epoch milliseconds; tests pass a fake clock with `sleep`. */
  readonly now?: () => number;
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

export interface SharedRateWindow {
  /** Waits for one token of the current window; rejects `deadline_exceeded` if `signal` aborts. */
  take(signal?: AbortSignal): Promise<void>;
}

const WINDOW_MS = 1_000;
// A block is a twentieth of the rate (at most 100): ~20 database round trips a second per worker
// at full speed, and a worker that stops leaves at most one block of its window unspent.
const BLOCKS_PER_WINDOW = 20;
const MAX_BLOCK = 100;

function cancelled(signal: AbortSignal): BrokerError {
  return new BrokerError("deadline_exceeded", "rate-limited wait was cancelled", { cause: signal.reason });
}

export function createSharedRateWindow(deps: SharedRateWindowDeps): SharedRateWindow {
  const limit = Math.max(1, Math.floor(deps.ratePerSecond));
  const block = Math.max(1, Math.min(MAX_BLOCK, Math.ceil(limit / BLOCKS_PER_WINDOW)));
  const now = deps.now ?? Date.now;
  const sleep =
    deps.sleep ??
    ((ms: number, signal?: AbortSignal) => sleepFor(ms, undefined, signal === undefined ? {} : { signal }));
  let windowStart = Number.NaN;
  let tokens = 0;
  let spentWindow = Number.NaN;
  let leasing: Promise<void> | undefined;

  async function lease(window: number): Promise<void> {
    const got = await leaseRewrapRateTokens(deps.db, {
      bucket: deps.bucket,
      windowStart: window,
      block,
      limit,
    });
    // Tokens of a window are only spent in it: a lease answered after the window turned is dropped.
    if (window !== windowStart) return;
    if (got === 0) spentWindow = window;
    tokens += got;
  }

  return {
    async take(signal) {
      for (;;) {
        if (signal?.aborted) throw cancelled(signal);
        const at = now();
        const window = Math.floor(at / WINDOW_MS) * WINDOW_MS;
        if (window !== windowStart) {
          windowStart = window;
          tokens = 0;
        }
        if (tokens > 0) {
          tokens -= 1;
          return;
        }
        if (spentWindow === window) {
          try {
            await sleep(window + WINDOW_MS - at + 1, signal);
          } catch (err) {
            throw signal?.aborted ? cancelled(signal) : err;
          }
          continue;
        }
        leasing ??= lease(window).finally(() => {
          leasing = undefined;
        });
        await leasing;
      }
    },
  };
}

/** The local token bucket (smooth, backs off when KMS throttles) in front of the shared window. */
export function withSharedWindow(local: RateLimiter, shared: SharedRateWindow): RateLimiter {
  return {
    async take(signal) {
      await local.take(signal);
      await shared.take(signal);
    },
    slowDown: () => local.slowDown(),
    speedUp: () => local.speedUp(),
    currentRate: () => local.currentRate(),
  };
}
