import { lengthPrefixed } from "../crypto/canonical-encoding.js";
import { type AuditEntry, hasSurrogate } from "./audit-entry.js";

/**
 * The canonical encoding of an audit row: the bytes hashed into the chain (audit-chain.ts).
 * Changing a single byte of it breaks every stored chain, so it is versioned by ENCODING_LABEL.
 */

const ENCODING_LABEL = "keybroker/audit/v1";

// Encoded as the bytes 0x00 (absent) or 0x01 followed by the value: for text, a one-character
// prefix on the string gives exactly those UTF-8 bytes without a buffer of its own.
const ABSENT = "\u0000";
const PRESENT = "\u0001";

function optional(value: string | Uint8Array | null): string | Buffer {
  if (value === null) return ABSENT;
  if (typeof value === "string") return PRESENT + value;
  const out = Buffer.alloc(1 + value.byteLength);
  out[0] = 1;
  out.set(value, 1);
  return out;
}

function uint64(value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(BigInt(value));
  return out;
}

function int64(value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigInt64BE(BigInt(value));
  return out;
}

// Values are tagged by type, so the string "1" and the number 1 encode differently. Stored rows
// only hold strings and integers; other JSON (from a tampered row) still encodes deterministically.
function encodeDetailValue(value: unknown): string {
  if (typeof value === "string") return `s${value}`;
  if (typeof value === "number") return `n${String(value)}`;
  return `j${JSON.stringify(value)}`;
}

function encodeDetail(detail: unknown): Buffer {
  // Only a tampered row holds anything but a map; it still needs a deterministic, distinct encoding.
  if (typeof detail !== "object" || detail === null || Array.isArray(detail)) {
    return Buffer.from(`x${JSON.stringify(detail) ?? "undefined"}`, "utf8");
  }
  const entries = Object.entries(detail);
  // jsonb reorders keys, so the encoding sorts them (by their UTF-8 bytes) rather than trusting
  // insertion order. Without surrogates (the usual case), UTF-16 code-unit order is code-point
  // order, which is UTF-8 byte order, so the plain string comparison gives the same result.
  if (!entries.some(([k]) => hasSurrogate(k))) entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  else entries.sort(([a], [b]) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));
  const head = Buffer.alloc(5);
  head.write("o", 0, "latin1");
  head.writeUInt32BE(entries.length, 1);
  // "o", the count, then each key and tagged value length-prefixed, one after the other.
  return Buffer.concat([head, lengthPrefixed(...entries.flatMap(([k, v]) => [k, encodeDetailValue(v)]))]);
}

/**
 * The canonical bytes of a row, every column but the hashes: length-prefixed parts, nulls told
 * apart from empty strings, so no two different rows encode alike whatever text they hold.
 */
export function encodeAuditEntry(seq: number, entry: AuditEntry): Buffer {
  return lengthPrefixed(
    ENCODING_LABEL,
    uint64(seq),
    int64(entry.occurredAt.getTime()),
    entry.requestId,
    optional(entry.callerKeyId),
    optional(entry.userRef),
    entry.action,
    optional(entry.target),
    entry.outcome,
    optional(entry.code),
    encodeDetail(entry.detail),
  );
}
