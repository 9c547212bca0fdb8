import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { createConcurrencyLimit } from "../../../src/proxy/concurrency-limit.js";
import { brokerErrorOf } from "../../support/broker-errors.js";

describe("concurrency limit per key", () => {
  it("L8 admits up to max calls per key, queues up to maxQueued more, refuses the next with resource_exhausted, and keys are independent", async () => {
    const limit = createConcurrencyLimit({ max: 2, maxQueued: 1, what: "with this secret" });
    const first = await limit.acquire("a");
    await limit.acquire("a");
    let thirdRan = false;
    const third = limit.acquire("a").then((release) => {
      thirdRan = true;
      return release;
    });
    expect((await brokerErrorOf(limit.acquire("a"))).code).toBe("resource_exhausted");
    expect(await limit.acquire("b")).toBeTypeOf("function");
    await Promise.resolve();
    expect(thirdRan).toBe(false);
    first();
    await third;
    expect(thirdRan).toBe(true);
    expect(limit.inFlight("a")).toBe(2);
  });

  it("L8 gives up waiting when the call's signal aborts, and the slot goes to the next waiter", async () => {
    const limit = createConcurrencyLimit({ max: 1, maxQueued: 2, what: "with this secret" });
    const release = await limit.acquire("k");
    const controller = new AbortController();
    const abandoned = limit.acquire("k", controller.signal);
    const next = limit.acquire("k");
    controller.abort(new BrokerError("deadline_exceeded", "deadline exceeded"));
    expect((await brokerErrorOf(abandoned)).code).toBe("deadline_exceeded");
    release();
    (await next)();
    expect(limit.inFlight("k")).toBe(0);
  });

  it("releases each slot once however often its release is called, and forgets idle keys", async () => {
    const limit = createConcurrencyLimit({ max: 1, maxQueued: 0, what: "by this caller key" });
    const release = await limit.acquire("k");
    release();
    release();
    expect(limit.inFlight("k")).toBe(0);
    await limit.acquire("k");
    expect(limit.inFlight("k")).toBe(1);
  });
});
