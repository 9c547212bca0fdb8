import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { createDataKeyCache, type DataKeyCacheOptions } from "../../../src/keys/data-key-cache.js";

function fakeClock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

/** A loader that counts calls and keeps every buffer it handed out, to check zeroing. */
function countingLoader(value = randomBytes(32)): {
  load: () => Promise<Buffer>;
  calls: () => number;
  handed: Buffer[];
} {
  const handed: Buffer[] = [];
  return {
    load: async () => {
      const copy = Buffer.from(value);
      handed.push(copy);
      return copy;
    },
    calls: () => handed.length,
    handed,
  };
}

const defaults: DataKeyCacheOptions = { maxAgeMs: 60_000, maxUses: 1_000, maxEntries: 100 };

function isZero(buf: Buffer): boolean {
  return buf.every((b) => b === 0);
}

describe("data-key cache", () => {
  it("loads once, then serves hits from memory", async () => {
    const cache = createDataKeyCache(defaults);
    const loader = countingLoader();
    const first = await cache.getOrLoad("u1", loader.load);
    const second = await cache.getOrLoad("u1", loader.load);
    expect(first.equals(second)).toBe(true);
    expect(loader.calls()).toBe(1);
    expect(cache.stats()).toEqual({ hits: 1, misses: 1, loads: 1, size: 1 });
  });

  it("D45 returns an independent copy to every caller, so zeroing one leaves the cache intact", async () => {
    const cache = createDataKeyCache(defaults);
    const key = randomBytes(32);
    const loader = countingLoader(key);
    const a = await cache.getOrLoad("u1", loader.load);
    a.fill(0);
    const b = await cache.getOrLoad("u1", loader.load);
    expect(b.equals(key)).toBe(true);
    b.fill(0);
    expect((await cache.getOrLoad("u1", loader.load)).equals(key)).toBe(true);
    expect(loader.calls()).toBe(1);
  });

  it("D46 reloads an entry once it reaches its maximum age", async () => {
    const clock = fakeClock();
    const cache = createDataKeyCache({ ...defaults, maxAgeMs: 1_000, now: clock.now });
    const loader = countingLoader();
    await cache.getOrLoad("u1", loader.load);
    clock.advance(999);
    await cache.getOrLoad("u1", loader.load);
    expect(loader.calls()).toBe(1);
    clock.advance(1);
    await cache.getOrLoad("u1", loader.load);
    expect(loader.calls()).toBe(2);
  });

  it("D46 serves an entry at most maxUses times, then reloads it", async () => {
    const cache = createDataKeyCache({ ...defaults, maxUses: 3 });
    const loader = countingLoader();
    await cache.getOrLoad("u1", loader.load); // load
    for (let i = 0; i < 3; i++) await cache.getOrLoad("u1", loader.load); // three hits
    expect(loader.calls()).toBe(1);
    await cache.getOrLoad("u1", loader.load);
    expect(loader.calls()).toBe(2);
    expect(cache.stats().hits).toBe(3);
  });

  it("D46 holds at most maxEntries, evicting the least recently used", async () => {
    const cache = createDataKeyCache({ ...defaults, maxEntries: 2 });
    const loaders = { a: countingLoader(), b: countingLoader(), c: countingLoader() };
    await cache.getOrLoad("a", loaders.a.load);
    await cache.getOrLoad("b", loaders.b.load);
    await cache.getOrLoad("a", loaders.a.load); // a is now more recent than b
    await cache.getOrLoad("c", loaders.c.load); // evicts b
    expect(cache.stats().size).toBe(2);
    await cache.getOrLoad("a", loaders.a.load);
    expect(loaders.a.calls()).toBe(1);
    await cache.getOrLoad("b", loaders.b.load);
    expect(loaders.b.calls()).toBe(2);
  });

  it("shares one load among 50 concurrent callers of the same key", async () => {
    const cache = createDataKeyCache(defaults);
    const key = randomBytes(32);
    let calls = 0;
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const load = async () => {
      calls += 1;
      await gate;
      return Buffer.from(key);
    };
    const pending = Array.from({ length: 50 }, () => cache.getOrLoad("u1", load));
    release();
    const results = await Promise.all(pending);
    expect(calls).toBe(1);
    expect(cache.stats()).toMatchObject({ loads: 1, misses: 50 });
    for (const result of results) expect(result.equals(key)).toBe(true);
    // Each caller got its own buffer.
    expect(new Set(results).size).toBe(50);
    results[0]?.fill(0);
    expect(results[1]?.equals(key)).toBe(true);
  });

  it("does not cache a failed load: the next caller loads again", async () => {
    const cache = createDataKeyCache(defaults);
    let calls = 0;
    const flaky = async () => {
      calls += 1;
      if (calls === 1) throw new BrokerError("unavailable", "key management service unavailable");
      return randomBytes(32);
    };
    await expect(cache.getOrLoad("u1", flaky)).rejects.toMatchObject({ code: "unavailable" });
    expect(cache.stats().size).toBe(0);
    await expect(cache.getOrLoad("u1", flaky)).resolves.toHaveLength(32);
    expect(calls).toBe(2);
  });

  it("fails every concurrent caller of a failed load with its error, then recovers", async () => {
    const cache = createDataKeyCache(defaults);
    let calls = 0;
    const failing = async () => {
      calls += 1;
      await new Promise((r) => setTimeout(r, 5));
      throw new BrokerError("unavailable", "key management service unavailable");
    };
    const results = await Promise.allSettled(Array.from({ length: 5 }, () => cache.getOrLoad("u1", failing)));
    expect(calls).toBe(1);
    expect(results.every((r) => r.status === "rejected")).toBe(true);
    await expect(cache.getOrLoad("u1", async () => randomBytes(32))).resolves.toHaveLength(32);
  });

  it("lets callers who joined a load retry with their own when the first caller's deadline expires", async () => {
    const cache = createDataKeyCache(defaults);
    const key = randomBytes(32);
    const cancelled = cache.getOrLoad("u1", async () => {
      await new Promise((r) => setTimeout(r, 5));
      throw new BrokerError("deadline_exceeded", "key management service call was cancelled");
    });
    let ownLoads = 0;
    const joined = cache.getOrLoad("u1", async () => {
      ownLoads += 1;
      return Buffer.from(key);
    });
    await expect(cancelled).rejects.toMatchObject({ code: "deadline_exceeded" });
    expect((await joined).equals(key)).toBe(true);
    expect(ownLoads).toBe(1);
  });

  // The buffer a loader returns becomes the cache's own entry: watching it shows when it is zeroed.
  it("zeroes its own copy when an entry is evicted as least recently used", async () => {
    const cache = createDataKeyCache({ ...defaults, maxEntries: 1 });
    const a = countingLoader();
    await cache.getOrLoad("a", a.load);
    expect(a.handed.some(isZero)).toBe(false);
    await cache.getOrLoad("b", countingLoader().load);
    expect(a.handed.every(isZero)).toBe(true);
  });

  it("D45 zeroes its own copy on expiry, on delete and on clear", async () => {
    const clock = fakeClock();
    const cache = createDataKeyCache({ ...defaults, maxAgeMs: 100, now: clock.now });
    const expiring = countingLoader();
    const deleted = countingLoader();
    const cleared = countingLoader();
    await cache.getOrLoad("expiring", expiring.load);
    clock.advance(50);
    await cache.getOrLoad("deleted", deleted.load);
    await cache.getOrLoad("cleared", cleared.load);

    cache.delete("deleted");
    expect(deleted.handed.every(isZero)).toBe(true);
    expect(cleared.handed.some(isZero)).toBe(false);

    clock.advance(50);
    expect(cache.evictExpired()).toBe(1);
    expect(expiring.handed.every(isZero)).toBe(true);
    expect(cleared.handed.some(isZero)).toBe(false);

    cache.clear();
    expect(cleared.handed.every(isZero)).toBe(true);
    expect(cache.stats().size).toBe(0);
  });

  it("zeroes an entry as soon as its uses run out", async () => {
    const cache = createDataKeyCache({ ...defaults, maxUses: 2 });
    const loader = countingLoader();
    await cache.getOrLoad("u1", loader.load);
    await cache.getOrLoad("u1", loader.load);
    expect(loader.handed.some(isZero)).toBe(false);
    const last = await cache.getOrLoad("u1", loader.load);
    expect(loader.handed.every(isZero)).toBe(true);
    expect(isZero(last)).toBe(false);
    expect(cache.stats().size).toBe(0);
  });

  it("zeroes an expired entry it finds on lookup", async () => {
    const clock = fakeClock();
    const cache = createDataKeyCache({ ...defaults, maxAgeMs: 100, now: clock.now });
    const loader = countingLoader();
    await cache.getOrLoad("u1", loader.load);
    clock.advance(100);
    await cache.getOrLoad("other", countingLoader().load);
    expect(loader.handed[0] !== undefined && isZero(loader.handed[0])).toBe(true);
  });

  it("does not cache a load that was in flight when its key was deleted", async () => {
    const cache = createDataKeyCache(defaults);
    let release: () => void = () => {};
    const gate = new Promise<void>((resolve) => (release = resolve));
    const pending = cache.getOrLoad("u1", async () => {
      await gate;
      return randomBytes(32);
    });
    cache.delete("u1"); // e.g. the user was shredded meanwhile
    release();
    const key = await pending;
    expect(isZero(key)).toBe(false);
    expect(cache.stats().size).toBe(0);
    const loader = countingLoader();
    await cache.getOrLoad("u1", loader.load);
    expect(loader.calls()).toBe(1);
  });

  it("refuses non-positive bounds", () => {
    expect(() => createDataKeyCache({ ...defaults, maxEntries: 0 })).toThrow(RangeError);
    expect(() => createDataKeyCache({ ...defaults, maxUses: -1 })).toThrow(RangeError);
    expect(() => createDataKeyCache({ ...defaults, maxAgeMs: Number.NaN })).toThrow(RangeError);
  });
});
