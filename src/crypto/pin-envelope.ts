import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, scrypt } from "node:crypto";
import { BrokerError } from "../errors.js";
import { lengthPrefixed } from "./canonical-encoding.js";

/**
 * A PIN user's data key as stored (issue 14 item 4): sealed (AES-256-GCM) under a key that needs
 * BOTH a KMS-wrapped share and the user's PIN: HKDF(share ‖ scrypt(PIN, salt)). The database and
 * the keyring together give the share, never the data key. The AEAD tag is the only PIN check:
 * there is no verifier hash beside it. Whoever holds the database AND the keyring can still guess
 * offline against this blob; scrypt's cost per guess is the bound (documented in the threat model).
 *
 * Layout: [magic 4][logN 1][salt 16][len 2][wrapped share][nonce 12][ciphertext 32][tag 16].
 * The magic starts with 0x00, which no keyring's wrapped key does, so a PIN row is told apart
 * from a plain one without a schema change and without asking the KMS.
 */
export const PIN_MAGIC = Buffer.from([0x00, 0x4b, 0x50, 0x31]); // "\0KP1"
const SALT_BYTES = 16;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;
const AAD_LABEL = "keybroker/user-pin/v1";
const HKDF_INFO = Buffer.from("keybroker/user-pin/v1/combined-key");

/** scrypt cost: N = 2^logN, r = 8, p = 1 (≈ 128·r·N bytes of memory per guess). */
export interface PinKdfParams {
  readonly logN: number;
}

export interface PinEnvelope {
  readonly logN: number;
  readonly salt: Buffer;
  /** The KMS-wrapped share, opaque. */
  readonly wrappedShare: Buffer;
  readonly nonce: Buffer;
  readonly sealed: Buffer;
}

/** Whether stored wrapped-key bytes are a PIN envelope rather than a keyring-wrapped key. */
export function isPinEnvelope(stored: Uint8Array): boolean {
  return (
    stored.length > PIN_MAGIC.length && PIN_MAGIC.equals(Buffer.from(stored.subarray(0, PIN_MAGIC.length)))
  );
}

const CORRUPT = "stored PIN envelope is malformed";

export function decodePinEnvelope(stored: Uint8Array): PinEnvelope {
  const bytes = Buffer.from(stored);
  if (!isPinEnvelope(bytes)) throw new BrokerError("data_loss", CORRUPT);
  let at = PIN_MAGIC.length;
  const take = (n: number): Buffer => {
    if (at + n > bytes.length) throw new BrokerError("data_loss", CORRUPT);
    const part = bytes.subarray(at, at + n);
    at += n;
    return part;
  };
  const logN = take(1).readUInt8(0);
  const salt = take(SALT_BYTES);
  const wrappedShare = take(take(2).readUInt16BE(0));
  const nonce = take(NONCE_BYTES);
  const sealed = take(KEY_BYTES + TAG_BYTES);
  if (at !== bytes.length || logN < 14 || logN > 20) throw new BrokerError("data_loss", CORRUPT);
  return { logN, salt, wrappedShare, nonce, sealed };
}

/**
 * The same envelope with its share re-wrapped under another master key (a master-key rewrap):
 * the share's plaintext, and so the sealed data key, are unchanged; no PIN is needed.
 */
export function withWrappedShare(stored: Uint8Array, wrappedShare: Uint8Array): Buffer {
  return encode({ ...decodePinEnvelope(stored), wrappedShare: Buffer.from(wrappedShare) });
}

function encode(e: PinEnvelope): Buffer {
  const len = Buffer.alloc(2);
  len.writeUInt16BE(e.wrappedShare.length, 0);
  return Buffer.concat([PIN_MAGIC, Buffer.from([e.logN]), e.salt, len, e.wrappedShare, e.nonce, e.sealed]);
}

// The user and the data key version are authenticated: one user's envelope does not open in
// another's row, nor an old version's in place of the current one.
function aad(userRef: Buffer, dataKeyVersion: number, logN: number): Buffer {
  return lengthPrefixed(AAD_LABEL, userRef, String(dataKeyVersion), String(logN));
}

/** scrypt off the event loop (libuv pool): a guess costs CPU and memory, not the server's latency. */
function deriveFromPin(pin: string, salt: Buffer, logN: number): Promise<Buffer> {
  const N = 2 ** logN;
  return new Promise((resolve, reject) => {
    scrypt(
      pin.normalize("NFC"),
      salt,
      KEY_BYTES,
      { N, r: 8, p: 1, maxmem: 256 * N * 8 + 1024 * 1024 },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

async function combinedKey(share: Buffer, pin: string, salt: Buffer, logN: number): Promise<Buffer> {
  const fromPin = await deriveFromPin(pin, salt, logN);
  const ikm = Buffer.concat([share, fromPin]);
  fromPin.fill(0);
  const key = Buffer.from(hkdfSync("sha256", ikm, salt, HKDF_INFO, KEY_BYTES));
  ikm.fill(0);
  return key;
}

/** Seals `dataKey` under (share, PIN). The caller zeroes `dataKey` and `share`. */
export async function sealWithPin(input: {
  readonly dataKey: Buffer;
  readonly share: Buffer;
  readonly wrappedShare: Uint8Array;
  readonly pin: string;
  readonly userRef: Buffer;
  readonly dataKeyVersion: number;
  readonly kdf: PinKdfParams;
}): Promise<Buffer> {
  const { logN } = input.kdf;
  const salt = randomBytes(SALT_BYTES);
  const nonce = randomBytes(NONCE_BYTES);
  const key = await combinedKey(input.share, input.pin, salt, logN);
  try {
    const cipher = createCipheriv("aes-256-gcm", key, nonce);
    cipher.setAAD(aad(input.userRef, input.dataKeyVersion, logN));
    const sealed = Buffer.concat([cipher.update(input.dataKey), cipher.final(), cipher.getAuthTag()]);
    return encode({ logN, salt, wrappedShare: Buffer.from(input.wrappedShare), nonce, sealed });
  } finally {
    key.fill(0);
  }
}

/**
 * Opens the data key with the unwrapped share and a PIN guess; undefined when the PIN is wrong
 * (the AEAD tag does not authenticate). The caller zeroes the result and `share`.
 */
export async function openWithPin(input: {
  readonly envelope: PinEnvelope;
  readonly share: Buffer;
  readonly pin: string;
  readonly userRef: Buffer;
  readonly dataKeyVersion: number;
}): Promise<Buffer | undefined> {
  const { envelope } = input;
  const key = await combinedKey(input.share, input.pin, envelope.salt, envelope.logN);
  try {
    const decipher = createDecipheriv("aes-256-gcm", key, envelope.nonce);
    decipher.setAAD(aad(input.userRef, input.dataKeyVersion, envelope.logN));
    decipher.setAuthTag(envelope.sealed.subarray(KEY_BYTES));
    try {
      return Buffer.concat([decipher.update(envelope.sealed.subarray(0, KEY_BYTES)), decipher.final()]);
    } catch {
      return undefined;
    }
  } finally {
    key.fill(0);
  }
}
