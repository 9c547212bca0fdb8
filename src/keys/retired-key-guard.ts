import { BrokerError } from "../errors.js";
import type { Keyring } from "./keyring.js";

export interface RetiredKeyGuardOptions {
  /** Master key ids still trusted: key ARNs and/or "local:N". Everything else is retired. */
  readonly acceptedKeyIds: Iterable<string>;
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
