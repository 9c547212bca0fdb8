/**
 * Unambiguous byte encodings for MAC and AAD inputs. Every part is length-prefixed, so
 * ("ab", "c") and ("a", "bc") never encode alike: concatenating or joining with a
 * separator would let one binding be confused with another.
 */
export function lengthPrefixed(...parts: ReadonlyArray<Uint8Array | string>): Buffer {
  // One allocation: this encodes every AAD, user-ref MAC input and audit row on the hot path.
  // Strings are measured first and written in place; not pooled (Buffer.alloc), because the
  // parts may include a raw `sub` that should not linger in the shared allocation slab.
  let total = 0;
  for (const part of parts)
    total += 4 + (typeof part === "string" ? Buffer.byteLength(part, "utf8") : part.byteLength);
  const out = Buffer.alloc(total);
  let at = 0;
  for (const part of parts) {
    if (typeof part === "string") {
      const length = out.write(part, at + 4, "utf8");
      out.writeUInt32BE(length, at);
      at += 4 + length;
    } else {
      out.writeUInt32BE(part.byteLength, at);
      out.set(part, at + 4);
      at += 4 + part.byteLength;
    }
  }
  return out;
}

/** Encryption context in canonical form: entries sorted by key bytes, then length-prefixed. */
export function canonicalContext(context: Readonly<Record<string, string>>): Buffer {
  const entries = Object.entries(context).map(([k, v]) => [Buffer.from(k, "utf8"), v] as const);
  entries.sort(([a], [b]) => Buffer.compare(a, b));
  const count = Buffer.alloc(4);
  count.writeUInt32BE(entries.length, 0);
  return Buffer.concat([count, ...entries.map(([k, v]) => lengthPrefixed(k, v))]);
}
