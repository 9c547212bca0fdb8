import type { KeyringCallOptions } from "./keyring.js";

/**
 * A MAC key the database cannot reach (M1): an HMAC KMS key in production (GenerateMac /
 * VerifyMac, the key never leaves KMS), one derived from the local keyring in development. It
 * signs audit checkpoints; anyone who can only write the database cannot make one verify.
 */
export interface MacKey {
  /** The key new MACs are made with: a KMS key ARN, or "local:N". */
  readonly keyId: string;
  /** HMAC-SHA-256 of `message`. */
  generateMac(message: Uint8Array, options?: KeyringCallOptions): Promise<Buffer>;
  /**
   * True only if `mac` is the MAC of `message` under `keyId` and `keyId` is a key this MacKey
   * trusts (the configured one): a row naming a key its writer controls must not verify.
   */
  verifyMac(
    message: Uint8Array,
    mac: Uint8Array,
    keyId: string,
    options?: KeyringCallOptions,
  ): Promise<boolean>;
  /** Zeroes key material or releases the KMS client. */
  close(): void;
}
