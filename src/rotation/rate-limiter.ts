import { setTimeout as sleepFor } from "node:timers/promises";
import { BrokerError } from "../errors.js";

/**
 * A token bucket in front of KMS calls. The rewrap job shares the account's KMS request
 * quota with the live broker, so it must never take all of it: it spends at most
 * `ratePerSecond` calls a second, and halves that when KMS throttles it (additive increase,
 * multiplicative decrease, as TCP does), so live traffic keeps its share.
 */
export interface RateLimiter {
  /** Waits for one call's token. Rejects `deadline_exceeded` if `signal` aborts first. */
  take(signal?: AbortSignal): Promise<void>;
  /** KMS pushed back (throttled, unavailable): halve the rate, down to a floor. */
  slowDown(): void;
  /** A call succeeded: creep back towards the configured rate. */
  speedUp(): void;
  /** Calls per second allowed right now. */
  currentRate(): number;
}

export interface RateLimiterOptions {
  readonly ratePerSecond: number;
  /** Tokens that may be spent at once after an idle spell; default: one second's worth, capped at 100. */
  readonly burst?: number;
  /** Milliseconds; tests pass a fake clock with `sleep`. */
  readonly now?: () => number;
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
}

// Throttling never stops the job, only slows it: 1/64 of the configured rate is the floor.
const MIN_RATE_DIVISOR = 64;
// Back to full rate after ~50 successful calls following one halving.
const RECOVERY_STEPS = 50;

function defaultSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return sleepFor(ms, undefined, signal === undefined ? {} : { signal });
}

function cancelled(signal: AbortSignal): BrokerError {
  return new BrokerError("deadline_exceeded", "rate-limited wait was cancelled", { cause: signal.reason });
}

export function createRateLimiter(options: RateLimiterOptions): RateLimiter {
  const maxRate = options.ratePerSecond;
  if (!(Number.isFinite(maxRate) && maxRate > 0)) throw new RangeError("ratePerSecond must be positive");
  const burst = options.burst ?? Math.min(100, Math.max(1, Math.floor(maxRate)));
  if (!(Number.isFinite(burst) && burst >= 1)) throw new RangeError("burst must be at least 1");
  const now = options.now ?? (() => performance.now());
  const sleep = options.sleep ?? defaultSleep;
  const minRate = maxRate / MIN_RATE_DIVISOR;

  let rate = maxRate;
  let tokens = burst;
  let refilledAt = now();

  function refill(): void {
    const at = now();
    tokens = Math.min(burst, tokens + ((at - refilledAt) * rate) / 1000);
    refilledAt = at;
  }

  return {
    async take(signal) {
      if (signal?.aborted) throw cancelled(signal);
      refill();
      // Reserve the token now (tokens may go negative) so concurrent callers queue up in
      // order, each sleeping until its own slot instead of all racing for the next one.
      tokens -= 1;
      if (tokens >= 0) return;
      try {
        await sleep((-tokens * 1000) / rate, signal);
      } catch (err) {
        tokens += 1; // give the unused reservation back
        throw signal?.aborted ? cancelled(signal) : err;
      }
    },
    slowDown() {
      refill();
      rate = Math.max(minRate, rate / 2);
    },
    speedUp() {
      if (rate >= maxRate) return;
      refill();
      rate = Math.min(maxRate, rate + maxRate / RECOVERY_STEPS);
    },
    currentRate: () => rate,
  };
}
