import { describe, expect, it } from "vitest";
import { createConcurrencyLimit } from "../../../src/proxy/concurrency-limit.js";
import { brokerErrorThrownBy } from "../../support/broker-errors.js";

describe("concurrency limit per key", () => {
  it("L8 admits up to max calls per key, refuses the next with resource_exhausted, and keys are independent", () => {
    const limit = createConcurrencyLimit({ max: 2, what: "with this secret" });
    const first = limit.acquire("a");
    limit.acquire("a");
    expect(brokerErrorThrownBy(() => limit.acquire("a")).code).toBe("resource_exhausted");
    expect(limit.acquire("b")).toBeTypeOf("function");
    first();
    expect(limit.acquire("a")).toBeTypeOf("function");
  });

  it("releases each slot once however often its release is called, and forgets idle keys", () => {
    const limit = createConcurrencyLimit({ max: 1, what: "by this caller key" });
    const release = limit.acquire("k");
    release();
    release();
    expect(limit.inFlight("k")).toBe(0);
    limit.acquire("k");
    expect(limit.inFlight("k")).toBe(1);
  });
});
