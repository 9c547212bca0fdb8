import { describe, expect, it } from "vitest";
import { createTokenCache } from "../../../src/auth/token-cache.js";

const T0 = Date.UTC(2030, 0, 1);
const identity = (byte: number, expiresAt = T0 / 1000 + 60) => ({
  userRef: Buffer.alloc(32, byte),
  expiresAt,
});

describe("createTokenCache", () => {
  it("returns the identity stored for the same token and nothing for another", () => {
    const cache = createTokenCache({ maxEntries: 10, now: () => T0 });
    cache.set("token-a", identity(1));
    expect(cache.get("token-a")?.userRef).toEqual(Buffer.alloc(32, 1));
    expect(cache.get("token-b")).toBeUndefined();
  });

  it("never serves an entry once the token's exp has passed, and drops it", () => {
    let now = T0;
    const cache = createTokenCache({ maxEntries: 10, now: () => now });
    cache.set("token", identity(1, T0 / 1000 + 10));
    now = T0 + 9_999;
    expect(cache.get("token")).toBeDefined();
    now = T0 + 10_000;
    expect(cache.get("token")).toBeUndefined();
    expect(cache.size).toBe(0);
  });

  it("does not store a token that is already expired", () => {
    const cache = createTokenCache({ maxEntries: 10, now: () => T0 });
    cache.set("token", identity(1, T0 / 1000));
    expect(cache.size).toBe(0);
  });

  it("evicts the least recently used entry when full", () => {
    const cache = createTokenCache({ maxEntries: 2, now: () => T0 });
    cache.set("a", identity(1));
    cache.set("b", identity(2));
    cache.get("a");
    cache.set("c", identity(3));
    expect(cache.size).toBe(2);
    expect(cache.get("b")).toBeUndefined();
    expect(cache.get("a")).toBeDefined();
    expect(cache.get("c")).toBeDefined();
  });

  it("stays bounded under many distinct tokens", () => {
    const cache = createTokenCache({ maxEntries: 50, now: () => T0 });
    for (let i = 0; i < 1_000; i++) cache.set(`token-${i}`, identity(i % 256));
    expect(cache.size).toBe(50);
  });

  it("stores nothing when maxEntries is 0", () => {
    const cache = createTokenCache({ maxEntries: 0, now: () => T0 });
    cache.set("a", identity(1));
    expect(cache.get("a")).toBeUndefined();
  });

  it("hands out copies, so a caller mutating userRef cannot change the next hit", () => {
    const cache = createTokenCache({ maxEntries: 10, now: () => T0 });
    const stored = identity(1);
    cache.set("token", stored);
    stored.userRef.fill(9);
    const first = cache.get("token");
    first?.userRef.fill(8);
    expect(cache.get("token")?.userRef).toEqual(Buffer.alloc(32, 1));
  });
});
