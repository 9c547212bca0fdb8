import { BrokerError } from "../errors.js";
import type { Keyring } from "./keyring.js";

export interface RetiredKeyGuardOptions {
  /** Master key ids still trusted: key ARNs and/or "local:N". Everything else is retired. */
  readonly acceptedKeyIds: Iterable<string>;
}

const LOCAL_KEY_ID = /^local:[1-9][0-9]{0,9}$/;
// The id KMS reports on Decrypt is always the key ARN (aliases and bare ids never come back).
const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key\/[A-Za-z0-9-]+$/;

/**
 * Parses a comma-separated list of accepted master keys (the proposed
 * KEYBROKER_ACCEPTED_MASTER_KEYS). Aliases are refused: an alias can be re-pointed, and
 * the keyring reports ARNs, so an alias would never match anyway.
 */
export function parseAcceptedMasterKeys(value: string): string[] {
  const ids = value
    .split(",")
    .map((id) => id.trim())
    .filter((id) => id !== "");
  if (ids.length === 0) throw new BrokerError("invalid_argument", "list at least one accepted master key");
  const bad = ids.filter((id) => !(LOCAL_KEY_ID.test(id) || KMS_KEY_ARN.test(id)));
  if (bad.length > 0) {
    throw new BrokerError(
      "invalid_argument",
      `accepted master keys must be key ARNs or local:N (not aliases): ${bad.join(", ")}`,
    );
  }
  return ids;
}

function retired(what: string, keyId: string): BrokerError {
  // The key id is not secret (it is in every row and in CloudTrail); it stays in `cause` anyway.
  return new BrokerError("failed_precondition", what, { cause: new Error(`master key ${keyId} is retired`) });
}

/**
 * A Keyring that fails closed on retired master keys. After a rotation the old key may stay
 * enabled in KMS (other services, a grace period), so "disabled in KMS" cannot be the only
 * line: this refuses to use any data key whose wrapping key is not accepted. Keyring.decrypt
 * is not told the stored key id, so the check is on the id the KMS reports after unwrapping
 * (the local keyring reads it from the wrapped bytes, AWS returns it); the plaintext is
 * zeroed before refusing.
 */
export function createRetiredKeyGuard(keyring: Keyring, options: RetiredKeyGuardOptions): Keyring {
  const accepted = new Set(options.acceptedKeyIds);
  if (accepted.size === 0) throw new BrokerError("failed_precondition", "no master key is accepted");
  const current = keyring.currentKeyId();
  if (!accepted.has(current)) {
    throw new BrokerError(
      "failed_precondition",
      `the configured master key ${current} is not among the accepted master keys`,
    );
  }

  return {
    kind: keyring.kind,
    currentKeyId: () => keyring.currentKeyId(),

    async generateDataKey(context, options) {
      const generated = await keyring.generateDataKey(context, options);
      if (accepted.has(generated.keyId)) return generated;
      generated.plaintext.fill(0);
      throw retired("new data keys would be wrapped under a retired master key", generated.keyId);
    },

    async decrypt(wrapped, context, options) {
      const unwrapped = await keyring.decrypt(wrapped, context, options);
      if (accepted.has(unwrapped.keyId)) return unwrapped;
      unwrapped.plaintext.fill(0);
      throw retired("data key wrapped under a retired master key", unwrapped.keyId);
    },

    async reEncrypt(wrapped, context, destinationKeyId, options) {
      // Rotating away from a retired key is the point of reEncrypt; rotating onto one is not.
      if (!accepted.has(destinationKeyId)) {
        throw retired("cannot re-wrap under a retired master key", destinationKeyId);
      }
      const rewrapped = await keyring.reEncrypt(wrapped, context, destinationKeyId, options);
      if (!accepted.has(rewrapped.keyId))
        throw retired("cannot re-wrap under a retired master key", rewrapped.keyId);
      return rewrapped;
    },
  };
}
