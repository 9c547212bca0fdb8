import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { BrokerError } from "../errors.js";

// AES-256-GCM over a small value with caller-built AAD (length-prefixed, domain label first;
// canonical-encoding.ts). Layout: [format][nonce][ciphertext][tag], the format byte in the AAD.
// For broker-held values outside a user's envelope: OAuth client secrets and PKCE verifiers.
const FORMAT_V1 = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const INTEGRITY_MESSAGE = "stored value failed its integrity check";

/** Seals `plaintext` under a 32-byte key; `aad` must say what the value is and where it belongs. */
export function sealValue(key: Buffer, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  if (key.length !== KEY_BYTES) throw new BrokerError("internal", "data key has the wrong length");
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.concat([Uint8Array.of(FORMAT_V1), aad]));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Uint8Array.of(FORMAT_V1), nonce, body, cipher.getAuthTag()]);
}

/** Opens a sealed value; any tampering, wrong key or wrong AAD is the same `data_loss`. */
export function openValue(key: Buffer, sealed: Uint8Array, aad: Uint8Array): Buffer {
  if (key.length !== KEY_BYTES) throw new BrokerError("internal", "data key has the wrong length");
  const input = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (input.length < 1 + NONCE_BYTES + TAG_BYTES || input.readUInt8(0) !== FORMAT_V1) {
    throw new BrokerError("data_loss", INTEGRITY_MESSAGE, { cause: new Error("bad sealed value header") });
  }
  const out = Buffer.alloc(input.length - 1 - NONCE_BYTES - TAG_BYTES);
  let unverified: Buffer | undefined;
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, input.subarray(1, 1 + NONCE_BYTES), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(Buffer.concat([Uint8Array.of(FORMAT_V1), aad]));
    decipher.setAuthTag(input.subarray(input.length - TAG_BYTES));
    unverified = decipher.update(input.subarray(1 + NONCE_BYTES, input.length - TAG_BYTES));
    unverified.copy(out);
    decipher.final();
    return out;
  } catch (cause) {
    out.fill(0);
    throw new BrokerError("data_loss", INTEGRITY_MESSAGE, { cause });
  } finally {
    unverified?.fill(0);
  }
}
