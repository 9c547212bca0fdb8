import { canonicalContext, lengthPrefixed } from "../crypto/canonical-encoding.js";
import { openValue, sealValue } from "../crypto/sealed-value.js";
import type { EncryptionContext, Keyring, KeyringCallOptions } from "./keyring.js";

/** A value sealed under its own data key, which the keyring wrapped. Safe to store. */
export interface KeyringSealedValue {
  readonly wrappedKey: Uint8Array;
  readonly masterKeyId: string;
  readonly ciphertext: Uint8Array;
}

// The encryption context goes to the KMS (authenticated there) and into the AAD (authenticated
// here), so a row's data key and its ciphertext are both bound to what the context names.
function aadOf(context: EncryptionContext): Buffer {
  return lengthPrefixed("keybroker/keyring-sealed-value/v1", canonicalContext(context));
}

/**
 * Seals one broker-held value (an OAuth client secret, a PKCE verifier) under a fresh data key
 * wrapped by the keyring. `context` must name what the value is and the row it belongs to; it is
 * never secret (AWS logs it).
 */
export async function sealUnderKeyring(
  keyring: Keyring,
  context: EncryptionContext,
  plaintext: Uint8Array,
  options?: KeyringCallOptions,
): Promise<KeyringSealedValue> {
  const generated = await keyring.generateDataKey(context, options);
  try {
    return {
      wrappedKey: generated.wrapped,
      masterKeyId: generated.keyId,
      ciphertext: sealValue(generated.plaintext, plaintext, aadOf(context)),
    };
  } finally {
    generated.plaintext.fill(0);
  }
}

/** Opens a value sealed by `sealUnderKeyring` with the same context; the caller zeroes the result. */
export async function openUnderKeyring(
  keyring: Keyring,
  context: EncryptionContext,
  sealed: KeyringSealedValue,
  options?: KeyringCallOptions,
): Promise<Buffer> {
  const { plaintext } = await keyring.decrypt(
    { wrapped: sealed.wrappedKey, keyId: sealed.masterKeyId },
    context,
    options,
  );
  try {
    return openValue(plaintext, sealed.ciphertext, aadOf(context));
  } finally {
    plaintext.fill(0);
  }
}
