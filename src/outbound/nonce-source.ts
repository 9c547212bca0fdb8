/** Hands out nonces that strictly increase per secret, as exchanges such as Kraken demand. */
export interface NonceSource {
  /** The next nonce for this secret, as a decimal string. */
  next(secretId: string): string;
}

export interface NonceSourceOptions {
  /** Wall clock in epoch milliseconds. */
  readonly now: () => number;
  /** Secrets remembered at once; the least recently used are forgotten first. */
  readonly maxEntries?: number;
}

/**
 * Nonce = max(now in microseconds, last + 1). Microseconds leave room for a thousand calls per
 * millisecond before the counter runs ahead of the clock, and stay above millisecond nonces a
 * user's own scripts may have used with the same key. `next` is synchronous, so concurrent
 * calls on the event loop cannot interleave inside it.
 *
 * Scope: one process. Several broker replicas sharing a key rely on their clocks alone; an
 * exchange that needs strict ordering across replicas needs a shared counter (not provided).
 */
export function createNonceSource(options: NonceSourceOptions): NonceSource {
  const maxEntries = options.maxEntries ?? 100_000;
  const last = new Map<string, number>();
  // The largest nonce ever forgotten: a secret coming back after eviction still moves forward
  // even if the clock stepped backwards meanwhile.
  let forgottenFloor = 0;

  return {
    next(secretId: string): string {
      const previous = last.get(secretId) ?? forgottenFloor;
      const nonce = Math.max(Math.floor(options.now() * 1000), previous + 1);
      last.delete(secretId);
      last.set(secretId, nonce);
      if (last.size > maxEntries) {
        const oldest = last.keys().next();
        if (!oldest.done) {
          forgottenFloor = Math.max(forgottenFloor, last.get(oldest.value) ?? 0);
          last.delete(oldest.value);
        }
      }
      return String(nonce);
    },
  };
}
