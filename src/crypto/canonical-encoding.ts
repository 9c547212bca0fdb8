import type { EncryptionContext } from "./keyring.js";

/**
 * Unambiguous byte encodings for MAC and AAD inputs. Every part is length-prefixed, so
 * ("ab", "c") and ("a", "bc") never encode alike: concatenating or joining with a
 * separator would let one binding be confused with another.
 */
export function lengthPrefixed(...parts: ReadonlyArray<Uint8Array | string>): Buffer {
  const chunks: Buffer[] = [];
  for (const part of parts) {
    const bytes = typeof part === "string" ? Buffer.from(part, "utf8") : part;
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(bytes.length, 0);
    chunks.push(prefix, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
  }
  return Buffer.concat(chunks);
}

/** Encryption context in canonical form: entries sorted by key bytes, then length-prefixed. */
export function canonicalContext(context: EncryptionContext): Buffer {
  const entries = Object.entries(context).map(([k, v]) => [Buffer.from(k, "utf8"), v] as const);
  entries.sort(([a], [b]) => Buffer.compare(a, b));
  const count = Buffer.alloc(4);
  count.writeUInt32BE(entries.length, 0);
  return Buffer.concat([count, ...entries.map(([k, v]) => lengthPrefixed(k, v))]);
}
