import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { createRateLimiter } from "../../../src/rotation/rate-limiter.js";

/** A clock that only moves when told; sleeps are recorded and resolve at once (or on abort). */
function fakeTime(options: { sleepsForever?: boolean } = {}) {
  let now = 0;
  const sleeps: number[] = [];
  return {
    sleeps,
    now: () => now,
    advance: (ms: number) => {
      now += ms;
    },
    sleep: (ms: number, signal?: AbortSignal) =>
      new Promise<void>((resolve, reject) => {
        sleeps.push(Math.round(ms));
        signal?.addEventListener("abort", () => reject(new Error("aborted")), { once: true });
        if (!options.sleepsForever) resolve();
      }),
  };
}

describe("rate limiter", () => {
  it("lets a burst through at once, then spaces calls at the configured rate", async () => {
    const time = fakeTime();
    const limiter = createRateLimiter({ ratePerSecond: 10, burst: 2, now: time.now, sleep: time.sleep });

    await limiter.take();
    await limiter.take();
    expect(time.sleeps).toEqual([]);
    await limiter.take();
    time.advance(100);
    await limiter.take();

    expect(time.sleeps).toEqual([100, 100]);
  });

  it("queues concurrent callers, each sleeping until its own slot", async () => {
    const time = fakeTime();
    const limiter = createRateLimiter({ ratePerSecond: 10, burst: 1, now: time.now, sleep: time.sleep });

    await Promise.all([limiter.take(), limiter.take(), limiter.take()]);

    expect(time.sleeps).toEqual([100, 200]);
  });

  it("halves its rate when KMS pushes back, never below 1/64 of it, and recovers on success", () => {
    const limiter = createRateLimiter({ ratePerSecond: 64, now: () => 0, sleep: async () => {} });

    limiter.slowDown();
    expect(limiter.currentRate()).toBe(32);
    for (let i = 0; i < 20; i += 1) limiter.slowDown();
    expect(limiter.currentRate()).toBe(1);
    limiter.speedUp();
    expect(limiter.currentRate()).toBeGreaterThan(1);
    for (let i = 0; i < 60; i += 1) limiter.speedUp();
    expect(limiter.currentRate()).toBe(64);
  });

  it("answers deadline_exceeded when a wait is aborted, and gives the reserved token back", async () => {
    const time = fakeTime({ sleepsForever: true });
    const limiter = createRateLimiter({ ratePerSecond: 1, burst: 1, now: time.now, sleep: time.sleep });
    await limiter.take();
    const stop = new AbortController();

    const waiting = limiter.take(stop.signal);
    stop.abort();

    await expect(waiting).rejects.toBeInstanceOf(BrokerError);
    await expect(waiting).rejects.toMatchObject({ code: "deadline_exceeded" });
    time.advance(1_000);
    await limiter.take(); // one second later one token is there again: none was lost to the abort
    expect(time.sleeps).toEqual([1_000]);
  });

  it("refuses a rate that is not a positive number", () => {
    expect(() => createRateLimiter({ ratePerSecond: 0 })).toThrow(RangeError);
    expect(() => createRateLimiter({ ratePerSecond: Number.NaN })).toThrow(RangeError);
  });
});
