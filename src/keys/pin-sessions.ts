import { createHash } from "node:crypto";

/** What an unlocked data key is bound to: one user's one session (issue 14 item 4). */
export interface PinSession {
  readonly userRef: Buffer;
  /** The token's HMAC'd `sid` when it has one; else the token itself (its `iat` and `exp`). */
  readonly sessionId: string;
  /** The token's expiry, epoch milliseconds: the unlocked key is gone by then whatever happens. */
  readonly expiresAtMs: number;
}

/** The slice of an authenticated user a PIN session is derived from (auth/identity.ts UserIdentity). */
export interface SessionSource {
  readonly userRef: Buffer;
  readonly expiresAt: number;
  readonly issuedAt?: number | undefined;
  readonly sessionRef?: Buffer | undefined;
}

/**
 * The session a token belongs to. With a `sid`, every token of that login shares the unlock;
 * without one, the unlock holds for this token only (a refreshed token unlocks again), so another
 * session of the same user never rides on this one's PIN.
 */
export function pinSessionOf(user: SessionSource): PinSession {
  const sessionId =
    user.sessionRef === undefined
      ? `t:${user.issuedAt ?? "none"}:${user.expiresAt}`
      : `s:${user.sessionRef.toString("hex")}`;
  return { userRef: user.userRef, sessionId, expiresAtMs: user.expiresAt * 1000 };
}

export interface PinSessionOptions {
  /** An unlocked key not used for this long is zeroed (the data-key idle timeout). */
  readonly idleMs: number;
  /** Beyond this many unlocked sessions the least recently used is dropped (it unlocks again). */
  readonly maxEntries: number;
  readonly now?: () => number;
}

/** Unlocked PIN users' data keys, in this process's memory only; never in the database. */
export interface PinSessions {
  /** Holds a copy of `key` for the session, bound to the exact stored envelope it came from. */
  unlock(session: PinSession, envelope: Uint8Array, key: Buffer): void;
  /** A copy of the session's key (the caller zeroes it), or undefined when locked. */
  take(session: PinSession, envelope: Uint8Array): Buffer | undefined;
  /** Zeroes every session of the user (logout, shred, PIN change elsewhere is caught by `take`). */
  forgetUser(userRef: Buffer): number;
  /** Zeroes expired and idle entries; returns how many. For a periodic timer. */
  evictExpired(): number;
  clear(): void;
}

interface Entry {
  readonly key: Buffer;
  readonly envelopeDigest: string;
  readonly expiresAtMs: number;
  lastUsedAt: number;
}

// Bound to the envelope's digest: a PIN changed or removed on another replica, or a re-created
// user, leaves a stale entry that no longer matches and is refused.
function digestOf(envelope: Uint8Array): string {
  return createHash("sha256").update(envelope).digest("hex");
}

export function createPinSessions(options: PinSessionOptions): PinSessions {
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();
  const keyOf = (s: PinSession): string => `${s.userRef.toString("hex")}|${s.sessionId}`;

  function drop(id: string): void {
    const entry = entries.get(id);
    if (entry === undefined) return;
    entries.delete(id);
    entry.key.fill(0);
  }

  const expired = (e: Entry, at: number): boolean =>
    at >= e.expiresAtMs || at - e.lastUsedAt >= options.idleMs;

  return {
    unlock(session, envelope, key) {
      const id = keyOf(session);
      drop(id);
      const at = now();
      entries.set(id, {
        key: Buffer.from(key),
        envelopeDigest: digestOf(envelope),
        expiresAtMs: session.expiresAtMs,
        lastUsedAt: at,
      });
      for (const oldest of entries.keys()) {
        if (entries.size <= options.maxEntries) break;
        drop(oldest);
      }
    },
    take(session, envelope) {
      const id = keyOf(session);
      const entry = entries.get(id);
      if (entry === undefined) return undefined;
      const at = now();
      if (expired(entry, at) || entry.envelopeDigest !== digestOf(envelope)) {
        drop(id);
        return undefined;
      }
      entry.lastUsedAt = at;
      entries.delete(id);
      entries.set(id, entry); // recency order
      return Buffer.from(entry.key);
    },
    forgetUser(userRef) {
      const prefix = `${userRef.toString("hex")}|`;
      let n = 0;
      for (const id of [...entries.keys()]) {
        if (!id.startsWith(prefix)) continue;
        drop(id);
        n += 1;
      }
      return n;
    },
    evictExpired() {
      const at = now();
      let n = 0;
      for (const [id, entry] of [...entries]) {
        if (!expired(entry, at)) continue;
        drop(id);
        n += 1;
      }
      return n;
    },
    clear() {
      for (const id of [...entries.keys()]) drop(id);
    },
  };
}
