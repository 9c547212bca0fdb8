/**
 * Opt-in retries, for idempotent calls only. A retried PutSecret could store a second version; a
 * retried proxied POST could place a second order: the client never re-sends either, whatever
 * the policy says. Only UNAVAILABLE is retried (the broker or a replica was unreachable or going
 * away), within the call's one deadline, with jittered exponential backoff.
 */
import { CancelledError, KeybrokerError } from "./errors.js";

export interface KeybrokerRetryOptions {
  /** Attempts in all, the first one included; default 3. 1 turns retries off. */
  readonly maxAttempts?: number;
  /** Upper bound of the first backoff, in ms; default 100. Each later one doubles it. */
  readonly initialBackoffMs?: number;
  /** Upper bound of any backoff, in ms; default 2,000. */
  readonly maxBackoffMs?: number;
}

/** A validated retry policy; `maxAttempts` 1 means none. */
export interface RetryPolicy {
  readonly maxAttempts: number;
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
}

export const NO_RETRIES: RetryPolicy = { maxAttempts: 1, initialBackoffMs: 0, maxBackoffMs: 0 };

export function retryPolicyOf(options: KeybrokerRetryOptions | undefined): RetryPolicy {
  if (options === undefined) return NO_RETRIES;
  const policy = {
    maxAttempts: options.maxAttempts ?? 3,
    initialBackoffMs: options.initialBackoffMs ?? 100,
    maxBackoffMs: options.maxBackoffMs ?? 2_000,
  };
  if (!Number.isInteger(policy.maxAttempts) || policy.maxAttempts < 1 || policy.maxAttempts > 10) {
    throw new TypeError("retry.maxAttempts must be an integer from 1 to 10");
  }
  for (const [name, value] of [
    ["initialBackoffMs", policy.initialBackoffMs],
    ["maxBackoffMs", policy.maxBackoffMs],
  ] as const) {
    if (!Number.isFinite(value) || value < 0) throw new TypeError(`retry.${name} must be a number >= 0`);
  }
  return policy;
}

/**
 * HTTP methods that RFC 9110 calls safe: a proxied call with one of these may be sent again.
 * PUT and DELETE are idempotent by the RFC, but upstream APIs do not all honour that (a DELETE
 * that cancels "the latest order"), so they are not retried either.
 */
const SAFE_HTTP_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "OPTIONS"]);

export function isSafeHttpMethod(method: string): boolean {
  return SAFE_HTTP_METHODS.has(method.toUpperCase());
}

/** Whether a failed attempt may be tried again: only UNAVAILABLE, never a refusal or a timeout. */
export function isRetryableFailure(err: unknown): boolean {
  return err instanceof KeybrokerError && err.code === "UNAVAILABLE";
}

/**
 * The wait before attempt `attempt + 1` (attempt counts from 1): a random time up to the doubled
 * bound ("full jitter"), so replicas restarting together are not hit by every client at once.
 */
export function backoffMs(policy: RetryPolicy, attempt: number): number {
  const bound = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** (attempt - 1));
  return Math.random() * bound;
}

/**
 * Waits `ms`, or rejects with a CancelledError when `signal` fires first. Returns false, without
 * waiting, when the wait would end after `deadline` (the call's deadline covers every attempt).
 */
export async function waitBeforeRetry(
  ms: number,
  deadline: number,
  signal: AbortSignal | undefined,
): Promise<boolean> {
  if (Date.now() + ms >= deadline) return false;
  await new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(new CancelledError("CANCELLED", "call cancelled while waiting to retry", undefined));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    if (signal?.aborted) onAbort();
    else signal?.addEventListener("abort", onAbort, { once: true });
  });
  return true;
}
