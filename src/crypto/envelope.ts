import { createCipheriv, createDecipheriv, randomBytes } from "node:crypto";
import { BrokerError } from "../errors.js";
import { lengthPrefixed } from "./canonical-encoding.js";

/**
 * What a sealed value belongs to. Every field is authenticated (AES-GCM AAD), so a
 * ciphertext only opens in the exact row it was written for (SPEC I6, catalogue D36):
 * - `secretId`: A's ciphertext copied into another row of A's does not open;
 * - `userRef`: A's ciphertext copied into B's row does not open, even with B's data key;
 * - `provider`: a Stripe key cannot be replayed as a key for another provider's hosts;
 * - `version`: an old version cannot be swapped back in as the current one;
 * - `part`: the masked hint and the fields are sealed apart and cannot trade places;
 * - `headBound`: the value belongs to a secret whose current version is pinned by a head MAC
 *   (catalogue L1, secret-head.ts). Values sealed before heads existed lack it; a bound value
 *   does not open as an unbound one, so clearing a secret's head cannot pass it off as legacy.
 */
export interface SecretBinding {
  readonly secretId: string;
  readonly userRef: Buffer;
  readonly provider: string;
  readonly version: number;
  readonly part: "fields" | "hint";
  readonly headBound?: boolean;
}

// Sealed layout: [format][nonce][ciphertext][tag]. The format byte lets a later scheme be
// introduced while rows in this one still open (catalogue D41); it is also in the AAD.
const FORMAT_V1 = 0x01;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const HEADER_BYTES = 1 + NONCE_BYTES;
const AAD_LABEL = "keybroker/secret-envelope/v1";
// Same layout and fields, another domain: a head-bound value's AAD never equals a legacy one's.
const AAD_LABEL_HEAD_BOUND = "keybroker/secret-envelope/v1/head-bound";

const INTEGRITY_MESSAGE = "stored secret failed its integrity check";

function bindingAad(format: number, binding: SecretBinding): Buffer {
  if (!Number.isSafeInteger(binding.version) || binding.version < 0) {
    throw new BrokerError("internal", "invalid envelope binding");
  }
  const version = Buffer.alloc(8);
  version.writeBigUInt64BE(BigInt(binding.version), 0);
  // Domain-separation label first: these bytes can never be mistaken for any other AAD or MAC input.
  return lengthPrefixed(
    binding.headBound === true ? AAD_LABEL_HEAD_BOUND : AAD_LABEL,
    Uint8Array.of(format),
    binding.secretId,
    binding.userRef,
    binding.provider,
    version,
    binding.part,
  );
}

function checkKey(dataKey: Buffer): void {
  if (dataKey.length !== KEY_BYTES) throw new BrokerError("internal", "data key has the wrong length");
}

/**
 * Encrypts with AES-256-GCM under a fresh random 96-bit nonce. Random nonces are safe
 * while a data key seals far fewer than 2^32 values (catalogue D39); one user's key
 * seals one value per secret version, orders of magnitude below that.
 */
export function seal(dataKey: Buffer, plaintext: Uint8Array, binding: SecretBinding): Buffer {
  checkKey(dataKey);
  const aad = bindingAad(FORMAT_V1, binding);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", dataKey, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([Uint8Array.of(FORMAT_V1), nonce, body, cipher.getAuthTag()]);
}

/**
 * Decrypts and authenticates. Fails closed: any tampering, truncation, wrong binding,
 * unknown format or wrong key is the same `data_loss` with the same generic message, so
 * the caller learns nothing about which check failed. The real reason stays in `cause`.
 */
export function open(dataKey: Buffer, sealed: Uint8Array, binding: SecretBinding): Buffer {
  checkKey(dataKey);
  const input = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (input.length < HEADER_BYTES + TAG_BYTES) {
    throw new BrokerError("data_loss", INTEGRITY_MESSAGE, { cause: new Error("sealed value truncated") });
  }
  const format = input.readUInt8(0);
  if (format !== FORMAT_V1) {
    throw new BrokerError("data_loss", INTEGRITY_MESSAGE, { cause: new Error("unknown envelope format") });
  }
  const aad = bindingAad(format, binding);
  const nonce = input.subarray(1, HEADER_BYTES);
  const body = input.subarray(HEADER_BYTES, input.length - TAG_BYTES);
  const tag = input.subarray(input.length - TAG_BYTES);

  // Plaintext goes into a buffer of our own (not the allocUnsafe pool) so the caller can zero it.
  const out = Buffer.alloc(body.length);
  let unverified: Buffer | undefined;
  try {
    const decipher = createDecipheriv("aes-256-gcm", dataKey, nonce, { authTagLength: TAG_BYTES });
    decipher.setAAD(aad);
    decipher.setAuthTag(tag);
    unverified = decipher.update(body);
    unverified.copy(out);
    decipher.final(); // throws unless tag, AAD, nonce and key all authenticate
    return out;
  } catch (cause) {
    out.fill(0);
    throw new BrokerError("data_loss", INTEGRITY_MESSAGE, { cause });
  } finally {
    unverified?.fill(0);
  }
}
