import { BrokerError } from "../errors.js";

/** Bounds how many calls may be in flight at once for one key (a secret, a caller key). */
export interface ConcurrencyLimit {
  /**
   * Takes a slot for `key`, or throws resource_exhausted when `key` already has `max` calls in
   * flight. Call the returned function exactly once when the call (or its stream) ends.
   */
  acquire(key: string): () => void;
  /** Calls in flight for `key` (for tests and metrics). */
  inFlight(key: string): number;
}

/**
 * In-flight counters per key, per process (catalogue L8): one user's slow streams, or one caller
 * key, cannot take every connection the provider's shared pool has. A refusal is immediate, not
 * queued: the caller sees RESOURCE_EXHAUSTED and retries, and nothing waits holding memory. With
 * N replicas the bound is N × max; the counters cost one Map lookup per call.
 */
export function createConcurrencyLimit(options: {
  readonly max: number;
  readonly what: string;
}): ConcurrencyLimit {
  const counts = new Map<string, number>();
  const release = (key: string) => {
    const left = (counts.get(key) ?? 1) - 1;
    if (left <= 0) counts.delete(key);
    else counts.set(key, left);
  };
  return {
    acquire(key) {
      const current = counts.get(key) ?? 0;
      if (current >= options.max) {
        throw new BrokerError(
          "resource_exhausted",
          `too many concurrent calls ${options.what} (at most ${options.max}); retry when one has finished`,
        );
      }
      counts.set(key, current + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        release(key);
      };
    },
    inFlight: (key) => counts.get(key) ?? 0,
  };
}
