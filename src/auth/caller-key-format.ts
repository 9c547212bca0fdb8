import { createHash, randomBytes } from "node:crypto";
import { crc32 } from "node:zlib";
import { BrokerError } from "../errors.js";

/**
 * Caller keys look like GitHub tokens: `kbk_` + 32 random base62 chars + 6 base62 chars of
 * CRC-32 over the random part. The prefix lets secret scanners spot a leaked key; the checksum
 * lets us drop typos and guesses offline, before any database lookup (catalogue B17).
 */
export const CALLER_KEY_PREFIX = "kbk_";
const RANDOM_LENGTH = 32;
const CHECKSUM_LENGTH = 6;
export const CALLER_KEY_LENGTH = CALLER_KEY_PREFIX.length + RANDOM_LENGTH + CHECKSUM_LENGTH;

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const KEY_SHAPE = new RegExp(`^${CALLER_KEY_PREFIX}[0-9A-Za-z]{${RANDOM_LENGTH + CHECKSUM_LENGTH}}$`);
// Bytes at or above 248 (= 4 × 62) are skipped so `byte % 62` stays uniform.
const UNBIASED_LIMIT = 248;

/** A new caller key: `key` is shown once, only `hash` and `last4` are stored. */
export interface GeneratedCallerKey {
  readonly key: string;
  readonly hash: Buffer;
  /** The last 4 chars are checksum chars, so showing them reveals nothing of the random part. */
  readonly last4: string;
}

export function generateCallerKey(): GeneratedCallerKey {
  // 32 uniform base62 chars carry ~190 bits, well above the 128-bit floor.
  const random = randomBase62(RANDOM_LENGTH);
  const key = `${CALLER_KEY_PREFIX}${random}${checksumOf(random)}`;
  return { key, hash: hashCallerKey(key), last4: key.slice(-4) };
}

/**
 * Validates prefix, length, charset and checksum; returns the key's hash for the lookup, or
 * `undefined` so a malformed key never reaches the database.
 */
export function parseCallerKey(raw: string): Buffer | undefined {
  if (raw.length !== CALLER_KEY_LENGTH || !KEY_SHAPE.test(raw)) return undefined;
  const random = raw.slice(CALLER_KEY_PREFIX.length, CALLER_KEY_PREFIX.length + RANDOM_LENGTH);
  // A plain compare is fine: the checksum is derived from the presented key, not a secret.
  if (raw.slice(-CHECKSUM_LENGTH) !== checksumOf(random)) return undefined;
  return hashCallerKey(raw);
}

/**
 * SHA-256 of the whole key. No salt or slow hash is needed: the key has ~190 bits of entropy,
 * so its hash cannot be brute-forced, and a deterministic hash allows lookup by hash.
 */
export function hashCallerKey(key: string): Buffer {
  return createHash("sha256").update(key, "utf8").digest();
}

function randomBase62(length: number): string {
  let out = "";
  // Each round keeps ~97% of 64 bytes, so one round almost always suffices; bounded anyway.
  for (let round = 0; round < 16 && out.length < length; round++) {
    for (const byte of randomBytes(64)) {
      if (byte >= UNBIASED_LIMIT) continue;
      out += BASE62.charAt(byte % 62);
      if (out.length === length) return out;
    }
  }
  throw new BrokerError("internal", "internal error", {
    cause: new Error("random source produced too many out-of-range bytes"),
  });
}

function checksumOf(random: string): string {
  let value = crc32(random);
  let out = "";
  for (let i = 0; i < CHECKSUM_LENGTH; i++) {
    out = BASE62.charAt(value % 62) + out;
    value = Math.floor(value / 62);
  }
  return out;
}
