import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  CALLER_KEY_LENGTH,
  generateCallerKey,
  hashCallerKey,
  parseCallerKey,
} from "../../../src/auth/caller-key-format.js";

/** Replaces the char at `index` with a different base62 char. */
function flipChar(key: string, index: number): string {
  const replacement = key[index] === "a" ? "b" : "a";
  return `${key.slice(0, index)}${replacement}${key.slice(index + 1)}`;
}

describe("caller key format", () => {
  it("generates kbk_ + 32 random + 6 checksum base62 chars", () => {
    const { key, hash, last4 } = generateCallerKey();
    expect(key).toMatch(/^kbk_[0-9A-Za-z]{38}$/);
    expect(key).toHaveLength(CALLER_KEY_LENGTH);
    expect(hash).toEqual(createHash("sha256").update(key).digest());
    expect(last4).toBe(key.slice(-4));
  });

  it("round-trips: a generated key parses to its own hash", () => {
    for (let i = 0; i < 200; i++) {
      const { key, hash } = generateCallerKey();
      expect(parseCallerKey(key)).toEqual(hash);
      expect(hashCallerKey(key)).toEqual(hash);
    }
  });

  it("generates distinct keys whose random parts use the whole alphabet", () => {
    const keys = Array.from({ length: 500 }, () => generateCallerKey().key);
    expect(new Set(keys).size).toBe(keys.length);
    const randomChars = new Set(keys.flatMap((k) => [...k.slice(4, 36)]));
    expect(randomChars.size).toBe(62);
  });

  it("B17 rejects a key with any single char changed (checksum)", () => {
    const { key } = generateCallerKey();
    for (let i = 4; i < key.length; i++) {
      expect(parseCallerKey(flipChar(key, i))).toBeUndefined();
    }
  });

  it.each([
    ["the wrong prefix", (k: string) => `ghp_${k.slice(4)}`],
    ["an upper-case prefix", (k: string) => `KBK_${k.slice(4)}`],
    ["one char too short", (k: string) => k.slice(0, -1)],
    ["one char too long", (k: string) => `${k}0`],
    ["surrounding whitespace", (k: string) => ` ${k}`],
    ["a non-base62 char", (k: string) => `${k.slice(0, 10)}-${k.slice(11)}`],
    ["a non-ASCII look-alike", (k: string) => `${k.slice(0, 10)}а${k.slice(11)}`],
    ["the empty string", () => ""],
  ])("rejects %s", (_label, mutate) => {
    expect(parseCallerKey(mutate(generateCallerKey().key))).toBeUndefined();
  });
});
