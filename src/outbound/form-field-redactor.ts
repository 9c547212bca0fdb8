import type { FieldRedactor } from "./redactor.js";

/** A redacted form value: "[redacted]", percent-encoded. */
export const REDACTED_FORM = Buffer.from("%5Bredacted%5D", "latin1");

const NAME = 0;
const VALUE = 1;
const SKIP = 2;

const hexValue = (b: number): number => {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  return -1;
};

/**
 * An application/x-www-form-urlencoded body (`access_token=...&expires=...`, as OAuth token
 * endpoints answer): the value of every pair whose decoded name is one of `fields` (ASCII
 * case-insensitive) becomes "[redacted]". Both "&" and ";" separate pairs: some parsers still
 * split on ";", and redacting one value too many is the safe side. Only the name being read is
 * held (bounded), so memory does not grow with the body.
 */
export function createFormFieldRedactor(fields: ReadonlySet<string>): FieldRedactor {
  let maxField = 0;
  for (const f of fields) maxField = Math.max(maxField, f.length);
  // A name spelled in more bytes than this decodes to more characters than any field has.
  const maxRaw = maxField * 3;
  let state = NAME;
  let raw: number[] = [];
  let rawMiss = false;
  let redactions = 0;

  const matches = (): boolean => {
    if (rawMiss) return false;
    let name = "";
    for (let i = 0; i < raw.length; i++) {
      let b = raw[i] as number;
      if (b === 0x2b) b = 0x20;
      else if (b === 0x25 && i + 2 < raw.length) {
        const hi = hexValue(raw[i + 1] ?? -1);
        const lo = hexValue(raw[i + 2] ?? -1);
        if (hi >= 0 && lo >= 0) {
          b = hi * 16 + lo;
          i += 2;
        }
      }
      if (b >= 0x80) return false;
      name += String.fromCharCode(b >= 0x41 && b <= 0x5a ? b + 0x20 : b);
    }
    return fields.has(name);
  };

  return {
    get redactions() {
      return redactions;
    },
    push(chunk) {
      const parts: Buffer[] = [];
      let runStart = 0;
      for (let i = 0; i < chunk.length; i++) {
        const b = chunk[i] as number;
        if (b === 0x26 || b === 0x3b) {
          if (state === SKIP) runStart = i;
          state = NAME;
          raw = [];
          rawMiss = false;
          continue;
        }
        if (state === NAME) {
          if (b === 0x3d) {
            if (matches()) {
              parts.push(chunk.subarray(runStart, i + 1), REDACTED_FORM);
              redactions += 1;
              state = SKIP;
            } else {
              state = VALUE;
            }
          } else if (raw.length < maxRaw) {
            raw.push(b);
          } else {
            rawMiss = true;
          }
        }
      }
      if (state !== SKIP && runStart < chunk.length) {
        parts.push(runStart === 0 ? chunk : chunk.subarray(runStart));
      }
      return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
    },
    flush: () => Buffer.alloc(0),
  };
}
