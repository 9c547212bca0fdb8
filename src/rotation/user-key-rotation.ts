import type { Kysely } from "kysely";
import { open, type SecretBinding, seal } from "../crypto/envelope.js";
import { isPinEnvelope } from "../crypto/pin-envelope.js";
import { headMac, verifyHead } from "../crypto/secret-head.js";
import { BrokerError } from "../errors.js";
import type { GeneratedDataKey, Keyring, UnwrappedDataKey } from "../keys/keyring.js";
import { userKeyContext } from "../keys/user-data-keys.js";
import { asBuffer } from "../store/bytes.js";
import {
  listUserSecretVersions,
  replaceUserDataKey,
  type SealedSecretVersion,
} from "../store/rewrap.repository.js";
import type { Database } from "../store/schema.js";
import { findUserKey, lockUserKey, type StoredUserKey } from "../store/users.repository.js";

export interface UserKeyRotationDeps {
  readonly db: Kysely<Database>;
  readonly keyring: Keyring;
  /** The user's ref (HMAC of issuer and subject), never a raw id. */
  readonly userRef: Buffer;
  readonly signal: AbortSignal;
  /** Drops the old key from this process's data-key cache (e.g. `userDataKeys.forget`, D46). */
  readonly forget?: (userRef: Buffer, previous: StoredUserKey) => void;
}

export interface RotatedUserDataKey {
  /** users.data_key_version after the rotation. */
  readonly dataKeyVersion: number;
  /** Secret versions (current and kept older ones) re-sealed under the new data key. */
  readonly versionsResealed: number;
  /** The master key wrapping the new data key. */
  readonly masterKeyId: string;
}

// The row changed between our read and our lock (a rewrap, another rotation): start over.
const MAX_ATTEMPTS = 3;

/**
 * Exactly the bindings secret-service.ts seals with (SPEC I6): a re-sealed value opens in
 * the same row, for the same user, provider, version and part, and nowhere else.
 */
function bindingOf(
  version: SealedSecretVersion,
  userRef: Buffer,
  part: SecretBinding["part"],
  headBound: boolean,
): SecretBinding {
  return {
    secretId: version.secretId,
    userRef,
    provider: version.provider,
    version: version.version,
    part,
    headBound,
  };
}

/**
 * Opens a stored value under the old key. A current version opens exactly as the read path
 * would (head-bound if and only if its secret has a head, catalogue L1). An older version may
 * predate heads or not; either way it authenticates its own row, and it is re-sealed as bound.
 */
function openStored(
  key: Buffer,
  v: SealedSecretVersion,
  userRef: Buffer,
  part: SecretBinding["part"],
): Buffer {
  const sealed = part === "fields" ? v.ciphertext : v.hintCiphertext;
  if (v.version === v.currentVersion)
    return open(key, sealed, bindingOf(v, userRef, part, v.headMac !== null));
  try {
    return open(key, sealed, bindingOf(v, userRef, part, true));
  } catch {
    return open(key, sealed, bindingOf(v, userRef, part, false));
  }
}

function reseal(
  oldKey: Buffer,
  newKey: Buffer,
  v: SealedSecretVersion,
  userRef: Buffer,
  part: SecretBinding["part"],
): Buffer {
  // A value that does not open under the old key fails the whole rotation (data_loss):
  // re-sealing garbage under a fresh key would launder a tampered row.
  const plaintext = openStored(oldKey, v, userRef, part);
  try {
    return seal(newKey, plaintext, bindingOf(v, userRef, part, true));
  } finally {
    plaintext.fill(0);
  }
}

/**
 * Each secret's head under the new key (catalogue L1). An existing head must verify under the old
 * key first, or the rotation would re-sign a rolled-back pointer; a secret not yet bound is bound
 * now (its current version opened as unbound above, so it was not a cleared head).
 */
function rebindHeads(
  oldKey: Buffer,
  newKey: Buffer,
  versions: readonly SealedSecretVersion[],
  userRef: Buffer,
): Array<{ secretId: string; headMac: Buffer }> {
  const heads = new Map<string, Buffer>();
  for (const v of versions) {
    if (heads.has(v.secretId)) continue;
    // The grant rides with its head (SPEC I10): re-signed only after it verified under the old key,
    // and a grant with no head to vouch for it fails the rotation instead of being blessed.
    const head = {
      secretId: v.secretId,
      userRef,
      provider: v.provider,
      version: v.currentVersion,
      ...(v.grant === null ? {} : { grant: v.grant }),
    };
    if (v.headMac !== null) verifyHead(oldKey, v.headMac, head);
    else if (v.grant !== null) {
      throw new BrokerError("data_loss", "stored secret failed its integrity check", {
        cause: new Error("a grant without a head"),
      });
    }
    heads.set(v.secretId, headMac(newKey, head));
  }
  return [...heads].map(([secretId, mac]) => ({ secretId, headMac: mac }));
}

/**
 * Gives the user a new data key (catalogue 46): every version of every secret is re-sealed
 * under it, `data_key_version` goes up and the encryption count restarts, in ONE transaction
 * holding the user's row lock. Both keys are fetched from the KMS before the transaction, so
 * the lock is held for database work only; the transaction then checks the row still holds
 * the wrapped key we unwrapped. A writer that sealed under the old key must hold the same row
 * lock and make the same check (see lockUserKey), or its value could be lost.
 */
export async function rotateUserDataKey(deps: UserKeyRotationDeps): Promise<RotatedUserDataKey> {
  const { db, keyring, userRef, signal } = deps;
  const context = userKeyContext(userRef);

  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt += 1) {
    const stored = await findUserKey(db, userRef);
    if (stored === undefined) throw new BrokerError("not_found", "user has no data key");
    const expected = asBuffer(stored.wrappedDataKey);
    // A PIN user's key opens only with their PIN (issue 14 item 4): nothing here may rotate it.
    if (isPinEnvelope(expected)) {
      throw new BrokerError(
        "failed_precondition",
        "the user has a PIN: their data key cannot be rotated without it",
      );
    }

    let oldKey: UnwrappedDataKey | undefined;
    let newKey: GeneratedDataKey | undefined;
    try {
      oldKey = await keyring.decrypt({ wrapped: expected, keyId: stored.masterKeyId }, context, { signal });
      newKey = await keyring.generateDataKey(context, { signal });
      const unwrapped = oldKey.plaintext;
      const fresh = newKey;
      const rotated = await db.transaction().execute(async (trx) => {
        const locked = await lockUserKey(trx, userRef);
        if (locked === undefined) throw new BrokerError("not_found", "user has no data key");
        if (!asBuffer(locked.wrappedDataKey).equals(expected)) return undefined;
        const versions = await listUserSecretVersions(trx, userRef);
        const heads = rebindHeads(unwrapped, fresh.plaintext, versions, userRef);
        const resealed = versions.map((v) => ({
          secretId: v.secretId,
          version: v.version,
          ciphertext: reseal(unwrapped, fresh.plaintext, v, userRef, "fields"),
          hintCiphertext: reseal(unwrapped, fresh.plaintext, v, userRef, "hint"),
        }));
        const replaced = await replaceUserDataKey(trx, {
          userRef,
          wrappedDataKey: fresh.wrapped,
          masterKeyId: fresh.keyId,
          // The nonce budget is per key: count only what the new key has sealed so far.
          encryptions: resealed.length * 2,
          versions: resealed,
          heads,
        });
        if (replaced === undefined) throw new BrokerError("not_found", "user has no data key");
        return replaced;
      });
      if (rotated !== undefined) {
        deps.forget?.(userRef, stored);
        return {
          dataKeyVersion: rotated.dataKeyVersion,
          versionsResealed: rotated.versionsReplaced,
          masterKeyId: fresh.keyId,
        };
      }
    } finally {
      oldKey?.plaintext.fill(0);
      newKey?.plaintext.fill(0);
    }
  }
  throw new BrokerError("unavailable", "the user's data key changed during rotation; try again");
}
