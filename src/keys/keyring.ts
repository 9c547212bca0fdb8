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
 * `data_loss` (ciphertext or context does not authenticate).
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
  readonly signal?: AbortSignal;
}

export interface Keyring {
  readonly kind: "aws-kms" | "local";
  /** The master key new data keys are wrapped under. */
  currentKeyId(): string;
  generateDataKey(context: EncryptionContext, options?: KeyringCallOptions): Promise<GeneratedDataKey>;
  decrypt(
    wrapped: Uint8Array,
    context: EncryptionContext,
    options?: KeyringCallOptions,
  ): Promise<UnwrappedDataKey>;
  /** Re-wraps under another master key without the plaintext leaving the KMS (AWS ReEncrypt). */
  reEncrypt(
    wrapped: Uint8Array,
    context: EncryptionContext,
    destinationKeyId: string,
    options?: KeyringCallOptions,
  ): Promise<WrappedKey>;
}
