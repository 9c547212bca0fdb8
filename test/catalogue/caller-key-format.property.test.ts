import { createHash } from "node:crypto";
import { crc32 } from "node:zlib";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { generateCallerKey, parseCallerKey } from "../../src/auth/caller-key-format.js";

/**
 * Catalogue B17 as properties: the caller-key parser is the gate in front of the database, so
 * it must accept exactly the well-formed keys (prefix, 32 base62 chars, 6-char CRC-32 checksum)
 * and nothing else. The format is restated here as the oracle, independent of the code.
 */

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

function checksum(random: string): string {
  let value = crc32(random);
  let out = "";
  for (let i = 0; i < 6; i++) {
    out = BASE62.charAt(value % 62) + out;
    value = Math.floor(value / 62);
  }
  return out;
}

const base62 = (length: number) =>
  fc.string({ unit: fc.constantFrom(...BASE62), minLength: length, maxLength: length });

/** A well-formed key built from generated random chars (so fast-check can shrink it). */
const validKey = base62(32).map((random) => `kbk_${random}${checksum(random)}`);

const sha256 = (key: string) => createHash("sha256").update(key, "utf8").digest();

describe("B17 caller-key parsing, as a property", () => {
  it("B17 parses every well-formed key, to the SHA-256 of the whole key", () => {
    fc.assert(
      fc.property(validKey, (key) => {
        expect(parseCallerKey(key)?.equals(sha256(key))).toBe(true);
      }),
      { numRuns: 500 },
    );
    // And the broker's own generator only makes keys of that form.
    for (let i = 0; i < 50; i++) {
      const { key } = generateCallerKey();
      expect(parseCallerKey(key)?.equals(sha256(key))).toBe(true);
    }
  });

  it("B17 rejects random strings, including ones of the right length and prefix, unless the checksum holds", () => {
    const candidates = fc.oneof(
      fc.string(),
      fc.string({ unit: "binary", minLength: 38, maxLength: 46 }),
      fc.string({ unit: "grapheme", minLength: 42, maxLength: 42 }),
      base62(38).map((rest) => `kbk_${rest}`),
      base62(38).map((rest) => `KBK_${rest}`),
    );
    fc.assert(
      fc.property(candidates, (raw) => {
        const wellFormed = /^kbk_[0-9A-Za-z]{38}$/.test(raw) && raw.slice(-6) === checksum(raw.slice(4, 36));
        expect(parseCallerKey(raw) !== undefined).toBe(wellFormed);
      }),
      { numRuns: 2_000 },
    );
  });

  it("B17 rejects every single-character substitution, deletion or insertion in a valid key", () => {
    const edit = fc.oneof(
      fc.record({
        kind: fc.constant("substitute" as const),
        at: fc.nat(),
        char: fc.oneof(
          fc.constantFrom(...BASE62),
          fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }),
        ),
      }),
      fc.record({ kind: fc.constant("delete" as const), at: fc.nat() }),
      fc.record({
        kind: fc.constant("insert" as const),
        at: fc.nat(),
        char: fc.oneof(
          fc.constantFrom(...BASE62),
          fc.string({ unit: "grapheme", minLength: 1, maxLength: 1 }),
        ),
      }),
    );
    fc.assert(
      fc.property(validKey, edit, (key, e) => {
        const at = e.at % key.length;
        let mutated: string;
        if (e.kind === "delete") {
          mutated = key.slice(0, at) + key.slice(at + 1);
        } else if (e.kind === "insert") {
          mutated = key.slice(0, at) + e.char + key.slice(at);
        } else {
          fc.pre(key.charAt(at) !== e.char);
          mutated = key.slice(0, at) + e.char + key.slice(at + 1);
        }
        expect(parseCallerKey(mutated)).toBeUndefined();
      }),
      { numRuns: 2_000 },
    );
  });
});
