import { describe, expect, it } from "vitest";
import { createDataKeyCache } from "../../../src/keys/data-key-cache.js";

describe("data-key cache: idle timeout and per-user eviction (issue 14)", () => {
  it("I134 evicts and zeroes a key not used for the idle timeout, though younger than its maximum age", async () => {
    let now = 0;
    const cache = createDataKeyCache({
      maxAgeMs: 60_000,
      maxUses: 100,
      maxEntries: 10,
      idleMs: 1_000,
      now: () => now,
    });
    let loads = 0;
    const load = async () => {
      loads += 1;
      return Buffer.alloc(32, 7);
    };
    (await cache.getOrLoad("alice:k1", load)).fill(0);
    now = 900;
    (await cache.getOrLoad("alice:k1", load)).fill(0); // a use resets the idle clock
    now = 1_800;
    (await cache.getOrLoad("alice:k1", load)).fill(0);
    expect(loads).toBe(1);
    now = 2_800;
    expect(cache.evictExpired()).toBe(1);
    expect(cache.stats().size).toBe(0);
    (await cache.getOrLoad("alice:k1", load)).fill(0);
    expect(loads).toBe(2);
  });

  it("I133 deleteWhere drops only the matching user's keys, and a load in flight for them is not cached", async () => {
    const cache = createDataKeyCache({ maxAgeMs: 60_000, maxUses: 100, maxEntries: 10 });
    (await cache.getOrLoad("alice:k1", async () => Buffer.alloc(32, 1))).fill(0);
    (await cache.getOrLoad("bob:k1", async () => Buffer.alloc(32, 2))).fill(0);
    let release: (key: Buffer) => void = () => undefined;
    const pending = cache.getOrLoad("alice:k2", () => new Promise<Buffer>((resolve) => (release = resolve)));
    await Promise.resolve();
    expect(cache.deleteWhere((key) => key.startsWith("alice:"))).toBe(1);
    release(Buffer.alloc(32, 3));
    (await pending).fill(0);
    expect(cache.stats().size).toBe(1);
    let reloaded = false;
    (
      await cache.getOrLoad("alice:k2", async () => {
        reloaded = true;
        return Buffer.alloc(32, 3);
      })
    ).fill(0);
    expect(reloaded).toBe(true);
  });
});
