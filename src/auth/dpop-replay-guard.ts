import { BrokerError } from "../errors.js";

/** Accepts each DPoP proof id once, across replicas. */
export interface DpopReplayGuard {
  /** Throws UNAUTHENTICATED "dpop_proof_replayed" for an id seen before, UNAVAILABLE if it can't tell. */
  claim(idHash: Buffer, rememberUntil: Date): Promise<void>;
}

export interface DpopReplayGuardOptions {
  /** The shared claim (one INSERT ... ON CONFLICT DO NOTHING): true for the first claim anywhere. */
  readonly claimShared: (idHash: Buffer, expiresAt: Date) => Promise<boolean>;
  /** Bound on the ids this replica remembers itself; the shared table stays the authority. */
  readonly maxLocalEntries: number;
  /** Epoch milliseconds. */
  readonly now: () => number;
}

/**
 * Two layers: a per-replica set refuses a replay to the same replica without a database
 * statement, and the shared table makes the id unique across replicas (RFC 9449 §11.1). A replay
 * to another replica costs that replica its one INSERT, like a first use. Fails closed: if the
 * shared claim cannot be made the call is UNAVAILABLE, never let through.
 */
export function createDpopReplayGuard(opts: DpopReplayGuardOptions): DpopReplayGuard {
  // Insertion order is expiry order (near enough: every proof gets the same window), so pruning
  // from the front drops the oldest first.
  const seen = new Map<string, number>();

  function prune(nowMs: number): void {
    for (const [key, until] of seen) {
      if (until > nowMs && seen.size <= opts.maxLocalEntries) break;
      seen.delete(key);
    }
  }

  return {
    async claim(idHash, rememberUntil) {
      const nowMs = opts.now();
      const key = idHash.toString("base64");
      const until = seen.get(key);
      if (until !== undefined && until > nowMs) throw replayed();
      seen.set(key, rememberUntil.getTime());
      prune(nowMs);
      let first: boolean;
      try {
        first = await opts.claimShared(idHash, rememberUntil);
      } catch (err) {
        // Not remembered locally either: a retry of the same proof, once the database is back, passes.
        seen.delete(key);
        throw new BrokerError("unavailable", "could not check the DPoP proof for replay; retry", {
          cause: err,
        });
      }
      if (!first) throw replayed();
    },
  };
}

function replayed(): BrokerError {
  return new BrokerError("unauthenticated", "DPoP proof already used: mint a new proof for each call", {
    reason: "dpop_proof_replayed",
  });
}
