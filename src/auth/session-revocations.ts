import { BrokerError } from "../errors.js";
import type { StoredRevocation } from "../store/session-revocations.repository.js";
import type { UserIdentity } from "./identity.js";

/** What a revocation applied on this replica must purge from its memory. */
export type RevocationListener = (revocation: StoredRevocation) => void;

export interface SessionRevocationsOptions {
  /**
   * Fail closed (issue 14): once the view has not been confirmed current for this long (the
   * listening connection is lost, or the database is unreachable), user calls are refused
   * UNAVAILABLE rather than risk serving a token whose logout this replica has not heard of.
   */
  readonly maxStalenessMs: number;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

/**
 * This replica's view of every logout: sub/sid ref → "tokens issued at or before this second are
 * refused". Checked on every user call, so it is a Map lookup: no database statement per call. It
 * only ever rises (a revocation is never lowered), so notices, start-up loads and this replica's
 * own writes can be applied in any order, twice, and still agree.
 */
export interface SessionRevocations {
  /** Throws UNAUTHENTICATED (session_ended) for a revoked token, UNAVAILABLE if the view is stale. */
  check(identity: UserIdentity): void;
  /** Raises the view; returns true if it changed (and then every listener was called). */
  apply(revocation: StoredRevocation): boolean;
  /** Calls `listener` for every revocation that raises the view from now on (to purge caches). */
  subscribe(listener: RevocationListener): void;
  /**
   * Every notice committed before `at` (epoch ms) has been applied. Without a new confirmation
   * within `maxStalenessMs`, calls are refused.
   */
  confirmCurrent(at: number): void;
  /**
   * Drops revocations older than `cutoffSec` (epoch seconds) from this replica's memory; returns
   * how many. Only for times no token can still pass the maximum-age check with (see pruning).
   */
  forgetBefore(cutoffSec: number): number;
  /** For an in-process database (PGlite), whose notices cannot be lost: never stale once loaded. */
  confirmAlwaysCurrent(): void;
  readonly size: number;
}

export function createSessionRevocations(opts: SessionRevocationsOptions): SessionRevocations {
  if (!Number.isInteger(opts.maxStalenessMs) || opts.maxStalenessMs <= 0) {
    throw new BrokerError("internal", "maxStalenessMs must be a positive integer");
  }
  const now = opts.now ?? Date.now;
  const users = new Map<string, number>();
  const sessions = new Map<string, number>();
  // Never confirmed: nothing is served until the first load (start-up does it before listening).
  let confirmedAt = Number.NEGATIVE_INFINITY;
  let alwaysCurrent = false;
  const listeners: RevocationListener[] = [];

  function refuse(): never {
    throw new BrokerError("unauthenticated", "session ended", { reason: "session_ended" });
  }

  /** Issued at or before the logout's second: a token minted in the same second is refused too. */
  function revoked(revokedBefore: number | undefined, issuedAt: number | undefined): boolean {
    if (revokedBefore === undefined) return false;
    // A token without `iat` cannot show it came after the logout.
    return issuedAt === undefined || issuedAt <= revokedBefore;
  }

  return {
    check(identity) {
      if (!alwaysCurrent && now() - confirmedAt > opts.maxStalenessMs) {
        throw new BrokerError("unavailable", "logout state not current on this replica; retry shortly");
      }
      if (users.size > 0 && revoked(users.get(identity.userRef.toString("hex")), identity.issuedAt)) refuse();
      const session = identity.sessionRef;
      if (session !== undefined && sessions.size > 0) {
        if (revoked(sessions.get(session.toString("hex")), identity.issuedAt)) refuse();
      }
    },
    apply(revocation) {
      const map = revocation.kind === "user" ? users : sessions;
      const key = revocation.ref.toString("hex");
      const current = map.get(key);
      if (current !== undefined && current >= revocation.revokedBefore) return false;
      map.set(key, revocation.revokedBefore);
      for (const listener of listeners) listener(revocation);
      return true;
    },
    subscribe(listener) {
      listeners.push(listener);
    },
    confirmCurrent(at) {
      confirmedAt = Math.max(confirmedAt, at);
    },
    forgetBefore(cutoffSec) {
      let forgotten = 0;
      for (const map of [users, sessions]) {
        for (const [key, revokedBefore] of map) {
          if (revokedBefore < cutoffSec) {
            map.delete(key);
            forgotten++;
          }
        }
      }
      return forgotten;
    },
    confirmAlwaysCurrent() {
      alwaysCurrent = true;
    },
    get size() {
      return users.size + sessions.size;
    },
  };
}
