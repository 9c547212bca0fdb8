import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { toStoreError } from "../../../src/store/database-errors.js";

describe("toStoreError", () => {
  it("turns an outage into BrokerError unavailable, keeping the driver's error as cause", () => {
    const dropped = Object.assign(new Error("terminating connection due to administrator command"), {
      code: "57P01",
    });
    const translated = toStoreError(dropped);
    expect(translated).toBeInstanceOf(BrokerError);
    expect(translated).toMatchObject({
      code: "unavailable",
      message: "database unavailable",
      cause: dropped,
    });
  });

  it.each([
    ["a unique violation", Object.assign(new Error("duplicate key value"), { code: "23505" })],
    ["a syntax error", Object.assign(new Error("syntax error at or near"), { code: "42601" })],
    ["a broker error", new BrokerError("not_found", "no such row")],
    ["a non-error value", "boom"],
  ])("returns %s unchanged", (_name, err) => {
    expect(toStoreError(err)).toBe(err);
  });
});
