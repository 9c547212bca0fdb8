import { BrokerError } from "../errors.js";
import type { Keyring } from "./keyring.js";

export interface RetiredKeyGuardOptions {
  /** Master key ids still trusted: key ARNs and/or "local:N". Everything else is retired. */
  readonly acceptedKeyIds: Iterable<string>;
  /**
   * Also accept whatever key the keyring currently wraps new keys under. For the default (no
   * list configured): the local keyring's current version moves when `keybroker keys add` runs
   * in another process, and the broker must keep accepting the key it itself wraps under.
   */
  readonly acceptCurrentKey?: boolean;
}

function retired(what: string, keyId: string): BrokerError {
  // The key id is not secret (it is in every row and in CloudTrail); it stays in `cause` anyway.
  return new BrokerError("failed_precondition", what, { cause: new Error(`master key ${keyId} is retired`) });
}

/**
 * A Keyring that fails closed on master keys it does not accept. After a rotation the old key
 * may stay enabled in KMS (other services, a grace period), so "disabled in KMS" cannot be the
 * only line; and the broker's role may be able to use other keys (another service's, or one
 * an attacker's account shares with it), so the key a row names is checked BEFORE the KMS is
 * asked (M2): a row naming any other key never reaches it. The keyring below passes that id
 * to the KMS and checks the id it answers with; the guard checks the answer again (defence in
 * depth: the plaintext is zeroed before refusing). app/keys.ts always installs it: by default
 * only the configured key is accepted.
 */
export function createRetiredKeyGuard(keyring: Keyring, options: RetiredKeyGuardOptions): Keyring {
  const listed = new Set(options.acceptedKeyIds);
  const accepted = {
    has: (id: string): boolean =>
      listed.has(id) || (options.acceptCurrentKey === true && id === keyring.currentKeyId()),
  };
  if (listed.size === 0) throw new BrokerError("failed_precondition", "no master key is accepted");
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
      if (!accepted.has(wrapped.keyId))
        throw retired("data key wrapped under a retired master key", wrapped.keyId);
      const unwrapped = await keyring.decrypt(wrapped, context, options);
      if (accepted.has(unwrapped.keyId)) return unwrapped;
      unwrapped.plaintext.fill(0);
      throw retired("data key wrapped under a retired master key", unwrapped.keyId);
    },

    async reEncrypt(wrapped, context, destinationKeyId, options) {
      // Rotating away from a retired key is the point of reEncrypt (the rewrap command uses the
      // unguarded keyring for that); here the source must be accepted like any decrypt.
      if (!accepted.has(wrapped.keyId))
        throw retired("data key wrapped under a retired master key", wrapped.keyId);
      // Rotating onto a retired key is never right.
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
