import { describe, expect, it } from "vitest";
import { toStatus } from "../../../src/api/transport/error-status.js";
import { BrokerError } from "../../../src/errors.js";
import { isDatabaseUnavailable } from "../../../src/store/database-errors.js";

describe("database outages", () => {
  it.each([
    [
      "an admin shutdown of the backend (57P01)",
      Object.assign(new Error("terminating connection due to administrator command"), { code: "57P01" }),
    ],
    ["a connection exception (08006)", Object.assign(new Error("connection failure"), { code: "08006" })],
    [
      "too many connections (53300)",
      Object.assign(new Error("sorry, too many clients already"), { code: "53300" }),
    ],
    [
      "a refused socket",
      Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }),
    ],
    ["pg's dropped connection", new Error("Connection terminated unexpectedly")],
    ["pg's unusable client", new Error("Client has encountered a connection error and is not queryable")],
    ["an exhausted pool", new Error("timeout exceeded when trying to connect")],
  ])("F51 maps %s to UNAVAILABLE, not INTERNAL", (_name, err) => {
    expect(isDatabaseUnavailable(err)).toBe(true);
    // The edge maps only BrokerError: the store translates the outage where it is born.
    const translated = new BrokerError("unavailable", "database unavailable", { cause: err });
    expect(toStatus(translated)).toMatchObject({ code: 14, message: "database unavailable" });
  });

  it.each([
    ["a unique violation", Object.assign(new Error("duplicate key value"), { code: "23505" })],
    ["a syntax error", Object.assign(new Error("syntax error at or near"), { code: "42601" })],
    ["a plain bug", new TypeError("cannot read properties of undefined")],
    ["a non-error value", "boom"],
  ])("keeps %s INTERNAL", (_name, err) => {
    expect(isDatabaseUnavailable(err)).toBe(false);
    expect(toStatus(err)).toMatchObject({ code: 13, message: "internal error" });
  });
});
