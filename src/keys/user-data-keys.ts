import { createHash } from "node:crypto";
import type { Kysely } from "kysely";
import { isPinEnvelope } from "../crypto/pin-envelope.js";
import { BrokerError } from "../errors.js";
import { asBuffer } from "../store/bytes.js";
import type { Database } from "../store/schema.js";
import { findUserKey, insertUserIfAbsent, type StoredUserKey } from "../store/users.repository.js";
import type { EncryptionContext, Keyring } from "./keyring.js";
import type { PinSession, PinSessions } from "./pin-sessions.js";

/** The slice of the data-key cache this module needs. */
export interface DataKeyCache {
  getOrLoad(key: string, load: () => Promise<Buffer>): Promise<Buffer>;
  delete(key: string): void;
  deleteWhere(matches: (key: string) => boolean): number;
}

/** A user's unwrapped data key. The holder zeroes `key` (fill(0)) when done with it. */
export interface UserDataKey {
  readonly key: Buffer;
  readonly stored: StoredUserKey;
}

/**
 * Encryption context of a user's wrapped data key. KMS authenticates it, so A's wrapped
 * key stored under B's row does not unwrap (catalogue D37). It holds the HMAC'd user ref,
 * never an email or `sub`: AWS records contexts in CloudTrail (D38).
 */
export function userKeyContext(userRef: Buffer): EncryptionContext {
  return { purpose: "keybroker:user-data-key", user_ref: userRef.toString("hex") };
}

/**
 * Context of a PIN user's KMS-wrapped share (pin-envelope.ts). Another user_ref value, so a share
 * never unwraps as a data key and a data key never as a share; the same context keys (`purpose`,
 * `user_ref`) the KMS policies allow.
 */
export function pinShareContext(userRef: Buffer): EncryptionContext {
  return { purpose: "keybroker:user-data-key", user_ref: `${userRef.toString("hex")}/pin-share` };
}

/** Refusal of a PIN user's key use from a session that has not unlocked (issue 14 item 4). */
export function sessionLocked(): BrokerError {
  return new BrokerError("failed_precondition", "session locked: unlock it with the user's PIN", {
    reason: "session_locked",
  });
}

export interface UserDataKeys {
  /** Drops a user's cached plaintext key now (shred, rotation) instead of at cache expiry (D46). */
  forget(userRef: Buffer, stored: StoredUserKey): void;
  /** Drops every cached key of this user, whatever its version (a logout: issue 14). */
  forgetUser(userRef: Buffer): number;
  /**
   * Unwraps a stored key (served from the cache when possible). A PIN user's key is served only
   * to a `session` that unlocked it (UnlockSession), else FAILED_PRECONDITION `session_locked`.
   */
  unwrap(
    userRef: Buffer,
    stored: StoredUserKey,
    signal: AbortSignal,
    session?: PinSession,
  ): Promise<UserDataKey>;
  /** The user's data key, created (one KMS GenerateDataKey) on the user's first write. */
  forWrite(
    db: Kysely<Database>,
    userRef: Buffer,
    signal: AbortSignal,
    session?: PinSession,
  ): Promise<UserDataKey>;
}

/**
 * Cache entries are keyed by the exact wrapped key, not (user, version): a user shredded and
 * re-created on another replica gets a new data key under the same version number, and a
 * stale entry would then seal new secrets under a key no other replica can unwrap.
 */
function cacheKeyOf(userRef: Buffer, stored: StoredUserKey): string {
  const digest = createHash("sha256").update(stored.wrappedDataKey).digest("hex").slice(0, 32);
  return `${userRef.toString("hex")}:${digest}`;
}

export function createUserDataKeys(deps: {
  keyring: Keyring;
  cache: DataKeyCache;
  /** Unlocked PIN sessions; absent, a PIN user's key is never served. */
  pinSessions?: PinSessions;
}): UserDataKeys {
  const { keyring, cache } = deps;

  async function unwrap(
    userRef: Buffer,
    stored: StoredUserKey,
    signal: AbortSignal,
    session?: PinSession,
  ): Promise<UserDataKey> {
    if (isPinEnvelope(stored.wrappedDataKey)) {
      // Never the KMS alone: the envelope needs the PIN, which only UnlockSession sees.
      const key = session && deps.pinSessions?.take(session, stored.wrappedDataKey);
      if (key === undefined) throw sessionLocked();
      return { key, stored };
    }
    const key = await cache.getOrLoad(cacheKeyOf(userRef, stored), async () => {
      // The row's master key id goes with it: the KMS refuses a key wrapped under another (M2).
      const unwrapped = await keyring.decrypt(
        { wrapped: asBuffer(stored.wrappedDataKey), keyId: stored.masterKeyId },
        userKeyContext(userRef),
        { signal },
      );
      return unwrapped.plaintext;
    });
    return { key, stored };
  }

  async function seed(userRef: Buffer, stored: StoredUserKey, plaintext: Buffer): Promise<Buffer> {
    // Copy now: the loader may run after the caller has zeroed `plaintext`.
    const copy = Buffer.from(plaintext);
    let taken = false;
    const key = await cache.getOrLoad(cacheKeyOf(userRef, stored), async () => {
      taken = true;
      return copy;
    });
    if (!taken) copy.fill(0);
    return key;
  }

  return {
    unwrap,
    forget(userRef, stored) {
      cache.delete(cacheKeyOf(userRef, stored));
    },
    forgetUser(userRef) {
      const prefix = `${userRef.toString("hex")}:`;
      const unlocked = deps.pinSessions?.forgetUser(userRef) ?? 0;
      return cache.deleteWhere((key) => key.startsWith(prefix)) + unlocked;
    },
    async forWrite(db, userRef, signal, session) {
      const existing = await findUserKey(db, userRef);
      if (existing !== undefined) return unwrap(userRef, existing, signal, session);

      const generated = await keyring.generateDataKey(userKeyContext(userRef), { signal });
      try {
        await insertUserIfAbsent(db, userRef, generated.wrapped, generated.keyId);
        // A concurrent first write may have won: use whatever is stored.
        const stored = await findUserKey(db, userRef);
        if (stored === undefined) throw new Error("user row vanished after insert");
        const won = asBuffer(stored.wrappedDataKey).equals(asBuffer(generated.wrapped));
        // If ours was stored, seed the cache with it and save a KMS Decrypt round trip.
        return won
          ? { key: await seed(userRef, stored, generated.plaintext), stored }
          : await unwrap(userRef, stored, signal);
      } finally {
        generated.plaintext.fill(0);
      }
    },
  };
}
