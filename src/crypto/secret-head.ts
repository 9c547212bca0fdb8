import { createHmac, timingSafeEqual } from "node:crypto";
import { BrokerError } from "../errors.js";
import { lengthPrefixed } from "./canonical-encoding.js";

/**
 * Which version of a secret is current (catalogue L1). Every version's ciphertext stays validly
 * sealed for its own version number, so the envelope alone cannot tell an old version from the
 * current one: a database writer could set `secrets.current_version` back to 1 and the broker
 * would use the older credential. The head is a MAC under a key derived from the user's data key
 * over the secret's identity and its current version, stored beside the pointer and checked on
 * every read; without the data key, a writer cannot make a head for a version the broker did not
 * make current itself.
 *
 * Since issue 13 the head also covers the secret's operation grant (SPEC I10): a head with a
 * `grant` is MAC'd under its own label (v2) over the sorted class names, so a database writer who
 * widens `secrets.operation_grant` (or clears it, to fall back to the provider's default) fails
 * the check before the secret is decrypted. A head without one (v1) is a secret stored before
 * grants; it keeps its head and gets its provider's default grant.
 */
export interface SecretHead {
  readonly secretId: string;
  readonly userRef: Buffer;
  readonly provider: string;
  readonly version: number;
  /** The operation classes the secret may be used for; absent for a pre-grant (v1) head. */
  readonly grant?: readonly string[];
}

export const HEAD_MAC_BYTES = 32;

// HKDF-Expand (RFC 5869) of one block: the data key is already a uniformly random key, so the
// Extract step adds nothing. Its own label keeps the MAC key apart from the AES-GCM use of the key.
const HEAD_KEY_INFO = Buffer.from("keybroker/secret-head-key/v1\x01", "utf8");
const HEAD_LABEL = "keybroker/secret-head/v1";
const GRANT_HEAD_LABEL = "keybroker/secret-head/v2";
const KEY_BYTES = 32;
const INTEGRITY_MESSAGE = "stored secret failed its integrity check";

function headInput(head: SecretHead): Buffer {
  if (!Number.isSafeInteger(head.version) || head.version < 1) {
    throw new BrokerError("internal", "invalid secret head");
  }
  const version = Buffer.alloc(8);
  version.writeBigUInt64BE(BigInt(head.version), 0);
  if (head.grant === undefined) {
    return lengthPrefixed(HEAD_LABEL, head.secretId, head.userRef, head.provider, version);
  }
  // Sorted, so the MAC is over the set as stored; each class length-prefixed inside one part.
  const grant = lengthPrefixed(...[...head.grant].sort());
  return lengthPrefixed(GRANT_HEAD_LABEL, head.secretId, head.userRef, head.provider, version, grant);
}

/** The head MAC to store with a secret whose current version is `head.version`. */
export function headMac(dataKey: Buffer, head: SecretHead): Buffer {
  if (dataKey.length !== KEY_BYTES) throw new BrokerError("internal", "data key has the wrong length");
  const headKey = createHmac("sha256", dataKey).update(HEAD_KEY_INFO).digest();
  try {
    return createHmac("sha256", headKey).update(headInput(head)).digest();
  } finally {
    headKey.fill(0);
  }
}

/**
 * Checks a stored head. Fails closed with the envelope's generic `data_loss` (D36), so a
 * rolled-back pointer reads exactly like any other tampered row; the reason stays in `cause`.
 */
export function verifyHead(dataKey: Buffer, stored: Uint8Array, head: SecretHead): void {
  const expected = headMac(dataKey, head);
  if (stored.byteLength !== expected.length || !timingSafeEqual(stored, expected)) {
    throw new BrokerError("data_loss", INTEGRITY_MESSAGE, {
      cause: new Error("secret head does not match its current version"),
    });
  }
}
