import { BrokerError } from "../errors.js";

/**
 * Binary encoding of a secret's structured fields (e.g. `api_key`, `api_secret`), so the
 * plaintext is never JSON-stringified into immutable strings we cannot zero.
 *
 * Layout: [0x01 codec version][u32 count] then, per field in ascending byte order of its
 * name: [u16 name length][name, UTF-8][u32 value length][value]. Deterministic: the same
 * fields always encode to the same bytes, which the keyed fingerprint relies on.
 */
const CODEC_VERSION = 0x01;
const MAX_NAME_BYTES = 0xffff;
const MAX_VALUE_BYTES = 0xffffffff;
const utf8 = new TextDecoder("utf-8", { fatal: true });

export function encodeFields(fields: ReadonlyMap<string, Buffer>): Buffer {
  const entries = [...fields].map(([name, value]) => ({ name: Buffer.from(name, "utf8"), value }));
  for (const { name, value } of entries) {
    if (name.length === 0 || name.length > MAX_NAME_BYTES) {
      throw new BrokerError("invalid_argument", "a secret field name is empty or too long");
    }
    if (value.length > MAX_VALUE_BYTES) {
      throw new BrokerError("invalid_argument", "a secret field value is too long");
    }
  }
  // Byte order, not UTF-16 string order, so any other implementation can reproduce it.
  entries.sort((a, b) => Buffer.compare(a.name, b.name));

  const size = entries.reduce((sum, e) => sum + 2 + e.name.length + 4 + e.value.length, 5);
  // Buffer.alloc, never the shared allocUnsafe pool: the caller zeroes this buffer.
  const out = Buffer.alloc(size);
  let at = out.writeUInt8(CODEC_VERSION, 0);
  at = out.writeUInt32BE(entries.length, at);
  for (const { name, value } of entries) {
    at = out.writeUInt16BE(name.length, at);
    at += name.copy(out, at);
    at = out.writeUInt32BE(value.length, at);
    at += value.copy(out, at);
  }
  return out;
}

/** Decodes `encodeFields` output; every value is a fresh copy the caller may zero. */
export function decodeFields(buf: Uint8Array): Map<string, Buffer> {
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const fields = new Map<string, Buffer>();
  try {
    let at = 0;
    const need = (n: number): number => {
      if (at + n > view.length) throw new Error("truncated");
      const start = at;
      at += n;
      return start;
    };
    if (view.readUInt8(need(1)) !== CODEC_VERSION) throw new Error("unknown codec version");
    const count = view.readUInt32BE(need(4));
    let previous: Buffer | undefined;
    for (let i = 0; i < count; i++) {
      const nameLength = view.readUInt16BE(need(2));
      if (nameLength === 0) throw new Error("empty name");
      const nameStart = need(nameLength);
      const nameBytes = view.subarray(nameStart, nameStart + nameLength);
      // Strictly ascending names: rejects duplicates and any non-canonical encoding.
      if (previous !== undefined && Buffer.compare(previous, nameBytes) >= 0) {
        throw new Error("names not strictly ascending");
      }
      previous = nameBytes;
      const valueLength = view.readUInt32BE(need(4));
      const valueStart = need(valueLength);
      const value = Buffer.alloc(valueLength);
      view.copy(value, 0, valueStart, valueStart + valueLength);
      fields.set(utf8.decode(nameBytes), value);
    }
    if (at !== view.length) throw new Error("trailing bytes");
    return fields;
  } catch (cause) {
    for (const value of fields.values()) value.fill(0);
    throw new BrokerError("data_loss", "stored secret is malformed", { cause });
  }
}
