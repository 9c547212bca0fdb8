import { BrokerError } from "../errors.js";

/** Bounds how many calls may be in flight at once for one key (a secret, a caller key). */
export interface ConcurrencyLimit {
  /**
   * Takes a slot for `key`, waiting (in arrival order) while `key` has `max` calls in flight.
   * Refuses with resource_exhausted when `maxQueued` calls already wait, and gives up when
   * `signal` aborts (the call's deadline or cancellation). Call the returned function exactly once
   * when the call (or its stream) ends.
   */
  acquire(key: string, signal?: AbortSignal): Promise<() => void>;
  /** Calls in flight for `key` (for tests and metrics). */
  inFlight(key: string): number;
}

interface Slots {
  running: number;
  readonly waiting: Array<() => void>;
}

/**
 * In-flight counters per key, per process (catalogue L8): one user's slow streams, or one caller
 * key, cannot take every connection the provider's shared pool has. Excess calls wait their turn
 * up to a bounded queue (then RESOURCE_EXHAUSTED), so a burst from one user is smoothed rather
 * than refused. With N replicas the bound is N × max; a call that finds a free slot costs one Map
 * lookup and no promise beyond the one `acquire` returns.
 */
export function createConcurrencyLimit(options: {
  readonly max: number;
  readonly maxQueued: number;
  readonly what: string;
}): ConcurrencyLimit {
  const byKey = new Map<string, Slots>();

  const releaseOf = (key: string, slots: Slots) => {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = slots.waiting.shift();
      if (next !== undefined) {
        next(); // the slot passes straight to the next waiter
        return;
      }
      slots.running--;
      if (slots.running === 0) byKey.delete(key);
    };
  };

  return {
    async acquire(key, signal) {
      let slots = byKey.get(key);
      if (slots === undefined) {
        slots = { running: 0, waiting: [] };
        byKey.set(key, slots);
      }
      if (slots.running < options.max) {
        slots.running++;
        return releaseOf(key, slots);
      }
      if (slots.waiting.length >= options.maxQueued) {
        throw new BrokerError(
          "resource_exhausted",
          `too many concurrent calls ${options.what} (${options.max} running, ${options.maxQueued} waiting); retry when one has finished`,
        );
      }
      signal?.throwIfAborted();
      const held = slots;
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => {
          const at = held.waiting.indexOf(grant);
          if (at >= 0) held.waiting.splice(at, 1);
          reject(signal?.reason);
        };
        const grant = () => {
          signal?.removeEventListener("abort", onAbort);
          resolve();
        };
        held.waiting.push(grant);
        signal?.addEventListener("abort", onAbort, { once: true });
      });
      return releaseOf(key, held);
    },
    inFlight: (key) => byKey.get(key)?.running ?? 0,
  };
}
