/**
 * The KMS seen by the rest of the broker: three verbs over wrapped data keys. Two
 * implementations: AWS KMS (production) and a local file keyring (development only).
 *
 * Encryption context is authenticated (AAD) by every implementation: a wrapped key
 * only unwraps with the exact context it was wrapped with. Context values are never
 * secret and never a raw user id (AWS logs them in CloudTrail): use HMAC'd user refs.
 *
 * Failures are BrokerErrors: `unavailable` (throttled, timed out, unreachable — after
 * bounded retries), `failed_precondition` (key disabled, access denied — never retried),
 * `data_loss` (ciphertext or context does not authenticate, or the wrapped key was not made
 * by the master key its row names).
 *
 * Unwrapping always names the master key (catalogue M2): the row's `keyId` goes to the KMS
 * (AWS `KeyId` / `SourceKeyId`), which refuses a ciphertext made under any other key, and the
 * id the KMS answers with must be that same key. Without it, anyone who can write a row could
 * store a data key they wrapped under a key of their own (any key the broker's role may use)
 * and read everything the broker then seals with it.
 */
export type EncryptionContext = Readonly<Record<string, string>>;

export interface WrappedKey {
  /** Opaque wrapped data key as the keyring returns it; safe to store. */
  readonly wrapped: Uint8Array;
  /** Identifier of the master key that wrapped it (AWS key ARN, or "local:<version>"). */
  readonly keyId: string;
}

export interface GeneratedDataKey extends WrappedKey {
  /** 32 bytes. The caller owns it and zeroes it (`fill(0)`) when done. */
  readonly plaintext: Buffer;
}

export interface UnwrappedDataKey {
  readonly plaintext: Buffer;
  readonly keyId: string;
}

export interface KeyringCallOptions {
  /** The caller's deadline (the RPC's signal): the call is abandoned when it aborts. */
  readonly signal?: AbortSignal;
}

export interface Keyring {
  readonly kind: "aws-kms" | "local";
  /** The master key new data keys are wrapped under. */
  currentKeyId(): string;
  generateDataKey(context: EncryptionContext, options?: KeyringCallOptions): Promise<GeneratedDataKey>;
  /** Unwraps a stored key; only under the master key `wrapped.keyId` names (else data_loss). */
  decrypt(
    wrapped: WrappedKey,
    context: EncryptionContext,
    options?: KeyringCallOptions,
  ): Promise<UnwrappedDataKey>;
  /**
   * Re-wraps under another master key without the plaintext leaving the KMS (AWS ReEncrypt);
   * the source must be the master key `wrapped.keyId` names, as for decrypt.
   */
  reEncrypt(
    wrapped: WrappedKey,
    context: EncryptionContext,
    destinationKeyId: string,
    options?: KeyringCallOptions,
  ): Promise<WrappedKey>;
}
