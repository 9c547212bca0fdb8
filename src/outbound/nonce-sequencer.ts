import { BrokerError, isBrokerError, untilAborted } from "../errors.js";
import { createNonceSource } from "./nonce-source.js";

/**
 * Gives the nonce-signing requests of one secret their turns, one at a time (F1). An exchange
 * such as Kraken refuses a nonce not above the last one it SAW, so increasing nonces are not
 * enough: the requests must also reach it in that order. A request therefore takes its nonce
 * only when its turn comes, and the next request waits until this one has been answered.
 *
 * Why until the answer (the response head) and not merely until the bytes are written: pooled
 * requests travel on different connections, and an upstream behind a load balancer may process
 * two connections in any order; only its answer proves it has checked this nonce. Exchanges
 * rate-limit private calls per key far below one round trip per call, so the cost is small.
 */
export interface NonceSequencer {
  /**
   * Waits for the secret's turn (FIFO, bounded; RESOURCE_EXHAUSTED when the queue is full),
   * then runs `send` with the next nonce and holds the turn until `send` settles. Waiting ends
   * early when `wait.signal` aborts; a wait for another replica is also bounded by `maxWaitMs`.
   */
  inTurn<T>(secretId: string, wait: TurnWait, send: (nonce: string) => Promise<T>): Promise<T>;
}

/** How long a request may wait for its turn. */
export interface TurnWait {
  /** The call's deadline and cancellation. */
  readonly signal: AbortSignal;
  /** Upper bound on waiting for another replica's send (the database lock). */
  readonly maxWaitMs: number;
}

/**
 * A nonce counter shared by every broker replica on one database, whose lock also orders the
 * sends: `withNext` holds the secret's lock from taking the nonce until `send` settles.
 */
export interface SharedNonceCounter {
  /**
   * Runs `send` with max(`floor`, last + 1) for the secret, under the secret's lock; the nonce
   * stays taken even when `send` fails (the upstream may have seen it). UNAVAILABLE when the
   * lock is not free within `maxWaitMs`.
   */
  withNext<T>(
    secretId: string,
    floor: number,
    maxWaitMs: number,
    send: (nonce: number) => Promise<T>,
  ): Promise<T>;
}

export interface NonceSequencerOptions {
  /** Wall clock in epoch milliseconds. */
  readonly now: () => number;
  /** Requests of one secret allowed to wait behind the one being sent. */
  readonly maxQueuedPerSecret: number;
  /** Across replicas (Postgres); absent: this process alone orders the nonces (PGlite, tests). */
  readonly shared?: SharedNonceCounter | undefined;
}

interface Lane {
  /** Wakes the next waiter, in arrival order. */
  readonly waiting: Array<() => void>;
}

export function createNonceSequencer(options: NonceSequencerOptions): NonceSequencer {
  const lanes = new Map<string, Lane>();
  const local = createNonceSource({ now: options.now });
  const { shared } = options;

  // Resolves when the secret's turn is this caller's. A lane exists while its turn is held.
  const acquire = (secretId: string, signal: AbortSignal): Promise<void> => {
    const lane = lanes.get(secretId);
    if (lane === undefined) {
      lanes.set(secretId, { waiting: [] });
      return Promise.resolve();
    }
    if (lane.waiting.length >= options.maxQueuedPerSecret) {
      return Promise.reject(
        new BrokerError("resource_exhausted", "too many calls are waiting to use this secret; retry later"),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const wake = (): void => {
        signal.removeEventListener("abort", onAbort);
        resolve();
      };
      const onAbort = (): void => {
        const at = lane.waiting.indexOf(wake);
        if (at >= 0) lane.waiting.splice(at, 1);
        reject(abortError(signal));
      };
      lane.waiting.push(wake);
      signal.addEventListener("abort", onAbort, { once: true });
    });
  };

  const release = (secretId: string): void => {
    const lane = lanes.get(secretId);
    const next = lane?.waiting.shift();
    if (next === undefined) lanes.delete(secretId);
    else next();
  };

  return {
    async inTurn(secretId, wait, send) {
      const { signal } = wait;
      if (signal.aborted) throw abortError(signal);
      await acquire(secretId, signal);
      if (shared === undefined) {
        try {
          if (signal.aborted) throw abortError(signal);
          return await send(local.next(secretId));
        } finally {
          release(secretId);
        }
      }
      // One request per secret per replica waits on the shared lock; the rest queue here. The
      // database wait cannot be cancelled, so the caller is answered at its abort while the
      // turn stays held until the locked section ends (its send sees the abort and does nothing).
      const locked = (async () => {
        if (signal.aborted) throw abortError(signal);
        return await shared.withNext(secretId, Math.floor(options.now() * 1000), wait.maxWaitMs, (nonce) =>
          send(String(nonce)),
        );
      })();
      const done = locked.finally(() => release(secretId));
      // The caller may have gone; the outcome is already reported through `send`.
      done.catch(() => undefined);
      return await untilAborted(done, signal, abortError);
    },
  };
}

function abortError(signal: AbortSignal): BrokerError {
  return isBrokerError(signal.reason)
    ? signal.reason
    : new BrokerError("deadline_exceeded", "call was cancelled before it was sent");
}
