import { createHmac, hkdfSync } from "node:crypto";
import { lengthPrefixed } from "../crypto/canonical-encoding.js";
import { BrokerError } from "../errors.js";

const USER_REF_LABEL = "keybroker/user-ref/v1";
const SESSION_REF_LABEL = "keybroker/session-ref/v1";
const FINGERPRINT_KEY_INFO = "keybroker/fingerprint-key/v1";
const FINGERPRINT_LABEL = "keybroker/fingerprint/v1";
const MIN_PEPPER_BYTES = 32;
// 96 bits: collision-free in practice for one user's handful of secrets, short enough to show.
const FINGERPRINT_HEX_CHARS = 24;
const HINT_MIN_BYTES = 16;
const HINT_CHARS = 4;

function checkPepper(pepper: Buffer): void {
  if (pepper.length < MIN_PEPPER_BYTES) throw new BrokerError("internal", "user-ref pepper is too short");
}

/**
 * The only name the broker knows a user by (SPEC I5): HMAC-SHA256 under the KMS-sealed
 * pepper of the token's issuer and subject, length-prefixed so (iss "a|b", sub "c") and
 * (iss "a", sub "b|c") differ. Without the pepper, a stolen database cannot even test a
 * guessed `sub`. The raw subject must go no further than this call.
 */
export function deriveUserRef(pepper: Buffer, issuer: string, subject: string): Buffer {
  checkPepper(pepper);
  if (issuer.length === 0 || subject.length === 0) {
    throw new BrokerError("unauthenticated", "the access token does not identify a user", {
      reason: "token_invalid",
    });
  }
  return createHmac("sha256", pepper)
    .update(lengthPrefixed(USER_REF_LABEL, issuer, subject))
    .digest();
}

/**
 * The name a login session (`sid`) is stored under in the revocation table (issue 14): an HMAC
 * like the user ref, under its own label, so a session id and a user id never share a ref.
 */
export function deriveSessionRef(pepper: Buffer, issuer: string, sid: string): Buffer {
  checkPepper(pepper);
  if (issuer.length === 0 || sid.length === 0) {
    throw new BrokerError("invalid_argument", "the session id is empty");
  }
  return createHmac("sha256", pepper)
    .update(lengthPrefixed(SESSION_REF_LABEL, issuer, sid))
    .digest();
}

/** A key for secret fingerprints, separate from the user-ref key by its own HKDF label. */
export function deriveFingerprintKey(pepper: Buffer): Buffer {
  checkPepper(pepper);
  return Buffer.from(hkdfSync("sha256", pepper, Buffer.alloc(0), FINGERPRINT_KEY_INFO, 32));
}

/**
 * A short tag that tells a user whether two of their stored secrets hold the same value.
 * Keyed (HMAC, not a bare hash) so a stolen database cannot confirm a guessed API key,
 * and bound to the user ref so equal keys of two users do not link the users.
 */
export function fingerprintFields(
  fingerprintKey: Buffer,
  userRef: Buffer,
  encodedFields: Uint8Array,
): string {
  const mac = createHmac("sha256", fingerprintKey)
    .update(lengthPrefixed(FINGERPRINT_LABEL, userRef, encodedFields))
    .digest("hex");
  return `fp_${mac.slice(0, FINGERPRINT_HEX_CHARS)}`;
}

function isPrintableAscii(code: number): boolean {
  return code >= 0x21 && code <= 0x7e;
}

/**
 * The masked hint shown in listings (SPEC I1): "…" plus the last 4 characters, and only
 * for values of at least 16 bytes, so at most 4 of 16+ characters are ever revealed.
 * Shorter values, or tails that are not printable ASCII, show just "…".
 */
export function maskedHint(value: Uint8Array): string {
  if (value.length < HINT_MIN_BYTES) return "…";
  const tail = value.subarray(value.length - HINT_CHARS);
  if (!tail.every(isPrintableAscii)) return "…";
  return `…${String.fromCharCode(...tail)}`;
}
