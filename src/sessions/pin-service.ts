import type { Kysely } from "kysely";
import type { AuditLog } from "../audit/audit-log.js";
import type { UserIdentity } from "../auth/identity.js";
import { decodePinEnvelope, isPinEnvelope, openWithPin, sealWithPin } from "../crypto/pin-envelope.js";
import { BrokerError, failedPrecondition, invalidArgument } from "../errors.js";
import type { Keyring } from "../keys/keyring.js";
import { type PinSessions, pinSessionOf } from "../keys/pin-sessions.js";
import { pinShareContext, type UserDataKeys } from "../keys/user-data-keys.js";
import { createConcurrencyLimit } from "../proxy/concurrency-limit.js";
import type { Database } from "../store/schema.js";
import {
  claimPinAttempt,
  clearPinAttempts,
  type PinAttemptPolicy,
  replaceWrappedDataKey,
} from "../store/user-pins.repository.js";
import { findUserKey, type StoredUserKey } from "../store/users.repository.js";

/** Who asked, for the audit row. */
export interface PinActor {
  readonly requestId: string;
  readonly callerKeyId: string;
}

/**
 * Optional user PINs (issue 14 item 4). A PIN user's data key opens only with the KMS AND the
 * PIN; UnlockSession puts it in this replica's memory for that one session. No PIN is stored,
 * logged, audited or put in an error: it lives in the request body and the scrypt call only.
 */
export interface PinService {
  /** Sets the first PIN, or changes it (`currentPin` then required). Re-wraps only the data key. */
  setPin(
    user: UserIdentity,
    pin: string,
    currentPin: string | undefined,
    actor: PinActor,
    signal: AbortSignal,
  ): Promise<void>;
  /** Unlocks the user's data key for this session (until logout, token expiry or idle timeout). */
  unlockSession(user: UserIdentity, pin: string, actor: PinActor, signal: AbortSignal): Promise<void>;
}

export interface PinServiceDeps {
  readonly db: Kysely<Database>;
  readonly keyring: Keyring;
  readonly userDataKeys: UserDataKeys;
  readonly pinSessions: PinSessions;
  readonly policy: PinAttemptPolicy;
  /** scrypt N = 2^logN for newly set PINs; an envelope keeps the cost it was sealed with. */
  readonly scryptLogN: number;
  readonly audit: Pick<AuditLog, "record">;
}

// scrypt holds 64 MiB and a libuv pool thread (shared with DNS and file I/O) per guess: at most
// two at once per replica, a short queue, then RESOURCE_EXHAUSTED, so a flood of unlocks cannot
// take the pool or the heap.
const KDF_RUNNING = 2;
const KDF_QUEUED = 32;

const PIN_MIN = 4;
const PIN_MAX = 128;

/** Checks a PIN's shape; the message never contains it. */
export function checkPin(pin: string, what: string): string {
  const normalized = pin.normalize("NFC");
  const length = [...normalized].length;
  if (length < PIN_MIN || length > PIN_MAX || normalized.trim().length === 0) {
    throw invalidArgument(`${what} must be ${PIN_MIN} to ${PIN_MAX} characters`);
  }
  return normalized;
}

export function createPinService(deps: PinServiceDeps): PinService {
  const { db, keyring, userDataKeys, pinSessions } = deps;
  const kdfSlots = createConcurrencyLimit({
    max: KDF_RUNNING,
    maxQueued: KDF_QUEUED,
    what: "deriving PIN keys",
  });
  async function withKdfSlot<T>(signal: AbortSignal, run: () => Promise<T>): Promise<T> {
    const release = await kdfSlots.acquire("scrypt", signal);
    try {
      return await run();
    } finally {
      release();
    }
  }

  async function record(
    actor: PinActor,
    user: UserIdentity,
    action: "pin.set" | "pin.unlock",
    outcome: "ok" | "denied",
    detail: { reason?: string; count?: number },
  ): Promise<void> {
    await deps.audit.record({
      requestId: actor.requestId,
      callerKeyId: actor.callerKeyId,
      userRef: user.userRef,
      action,
      outcome,
      ...(outcome === "denied"
        ? {
            code:
              detail.reason === "pin_locked"
                ? ("resource_exhausted" as const)
                : ("permission_denied" as const),
          }
        : {}),
      detail,
    });
  }

  /** The data key of a PIN user, for a correct PIN; every guess is charged first, on every replica. */
  async function openWithGuess(
    user: UserIdentity,
    stored: StoredUserKey,
    pin: string,
    actor: PinActor,
    signal: AbortSignal,
  ): Promise<Buffer> {
    const envelope = decodePinEnvelope(stored.wrappedDataKey);
    // The KMS first: an outage must not burn the user's guesses.
    const { plaintext: share } = await keyring.decrypt(
      { wrapped: envelope.wrappedShare, keyId: stored.masterKeyId },
      pinShareContext(user.userRef),
      { signal },
    );
    // A slot first, then the charge: an overloaded replica must not burn the user's guesses either.
    const release = await kdfSlots.acquire("scrypt", signal);
    try {
      const claim = await claimPinAttempt(db, user.userRef, deps.policy);
      if (!claim.claimed) {
        await record(actor, user, "pin.unlock", "denied", { reason: "pin_locked" });
        throw new BrokerError("resource_exhausted", "too many wrong PINs: try again later", {
          reason: "pin_locked",
          retryAfterMs: Math.max(1, claim.retryAfterMs),
        });
      }
      const key = await openWithPin({
        envelope,
        share,
        pin,
        userRef: user.userRef,
        dataKeyVersion: stored.dataKeyVersion,
      });
      if (key === undefined) {
        const reason = claim.lockedOut ? "pin_locked_out" : "pin_wrong";
        await record(actor, user, "pin.unlock", "denied", { reason, count: claim.attempt });
        throw new BrokerError("permission_denied", "wrong PIN", { reason: "pin_wrong" });
      }
      await clearPinAttempts(db, user.userRef);
      return key;
    } finally {
      release();
      share.fill(0);
    }
  }

  return {
    async setPin(user, rawPin, rawCurrent, actor, signal) {
      const pin = checkPin(rawPin, "pin");
      const current = rawCurrent === undefined ? undefined : checkPin(rawCurrent, "current_pin");
      let stored = await findUserKey(db, user.userRef);
      let dataKey: Buffer;
      if (stored === undefined) {
        // No secret yet: create the data key now, so the first secret is sealed under the PIN's key.
        ({ key: dataKey, stored } = await userDataKeys.forWrite(db, user.userRef, signal));
      } else if (isPinEnvelope(stored.wrappedDataKey)) {
        if (current === undefined)
          throw failedPrecondition("a PIN is set: current_pin is required to change it");
        dataKey = await openWithGuess(user, stored, current, actor, signal);
      } else {
        ({ key: dataKey } = await userDataKeys.unwrap(user.userRef, stored, signal));
      }
      const share = await keyring.generateDataKey(pinShareContext(user.userRef), { signal });
      try {
        const version = stored.dataKeyVersion;
        const envelope = await withKdfSlot(signal, () =>
          sealWithPin({
            dataKey,
            share: share.plaintext,
            wrappedShare: share.wrapped,
            pin,
            userRef: user.userRef,
            dataKeyVersion: version,
            kdf: { logN: deps.scryptLogN },
          }),
        );
        const replaced = await replaceWrappedDataKey(db, user.userRef, stored.wrappedDataKey, {
          wrapped: envelope,
          masterKeyId: share.keyId,
        });
        if (!replaced)
          throw new BrokerError("unavailable", "the user's data key changed meanwhile: try again");
        // Other sessions unlocked the old envelope: they unlock again with the new PIN.
        userDataKeys.forgetUser(user.userRef);
        pinSessions.unlock(pinSessionOf(user), envelope, dataKey);
        await clearPinAttempts(db, user.userRef);
      } finally {
        share.plaintext.fill(0);
        dataKey.fill(0);
      }
      await record(actor, user, "pin.set", "ok", { reason: current === undefined ? "first" : "changed" });
    },

    async unlockSession(user, rawPin, actor, signal) {
      const pin = checkPin(rawPin, "pin");
      const stored = await findUserKey(db, user.userRef);
      if (stored === undefined || !isPinEnvelope(stored.wrappedDataKey)) {
        throw failedPrecondition("no PIN is set for this user");
      }
      const dataKey = await openWithGuess(user, stored, pin, actor, signal);
      try {
        pinSessions.unlock(pinSessionOf(user), stored.wrappedDataKey, dataKey);
      } finally {
        dataKey.fill(0);
      }
      await record(actor, user, "pin.unlock", "ok", {});
    },
  };
}
