import { setTimeout as sleepFor } from "node:timers/promises";
import { BrokerError, isBrokerError } from "../errors.js";
import type { Logger } from "../log/logger.js";
import type { RateLimiter } from "./rate-limiter.js";

/** Backoff for `unavailable` KMS answers, on top of the SDK's own retries. */
export interface RetryPolicy {
  /** Attempts per KMS call, the first included. */
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

// Up to ~2 minutes of backoff per call: throttling passes, an outage stops the job (resumable).
export const DEFAULT_RETRY: RetryPolicy = { attempts: 10, baseDelayMs: 250, maxDelayMs: 20_000 };

export interface KmsRetryDeps {
  /** Every attempt takes a token; throttling slows it down, success speeds it back up. */
  readonly limiter: RateLimiter;
  readonly retry: RetryPolicy;
  readonly logger: Logger;
  /** Cuts a wait (for a token or a backoff) short; the call then rejects `deadline_exceeded`. */
  readonly signal?: AbortSignal | undefined;
}

export interface KmsRetry {
  /** One KMS call through the rate limit, retried with backoff while KMS is `unavailable`. */
  call<T>(call: () => Promise<T>): Promise<T>;
  /** KMS calls retried so far. */
  retries(): number;
}

function cancelled(signal: AbortSignal): BrokerError {
  return new BrokerError("deadline_exceeded", "rewrap was stopped", { cause: signal.reason });
}

export function createKmsRetry(deps: KmsRetryDeps): KmsRetry {
  const { limiter, retry, logger, signal } = deps;
  let retries = 0;

  async function call<T>(kmsCall: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt += 1) {
      await limiter.take(signal);
      try {
        const result = await kmsCall();
        limiter.speedUp();
        return result;
      } catch (err) {
        if (!(isBrokerError(err) && err.code === "unavailable") || attempt >= retry.attempts) throw err;
        limiter.slowDown();
        retries += 1;
        // Full jitter: concurrent workers throttled together must not retry together.
        const delayMs = Math.random() * Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1));
        logger.debug({ attempt, delayMs: Math.round(delayMs) }, "KMS unavailable during rewrap; backing off");
        try {
          await sleepFor(delayMs, undefined, signal === undefined ? {} : { signal });
        } catch (sleepErr) {
          throw signal?.aborted ? cancelled(signal) : sleepErr;
        }
      }
    }
  }

  return { call, retries: () => retries };
}
