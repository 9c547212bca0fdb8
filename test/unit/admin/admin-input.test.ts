import { describe, expect, it } from "vitest";
import {
  ADMIN_LIMITS,
  parseAuditQuery,
  parseCallerKeyExpiry,
  parseCallerKeyId,
  parseUserSelector,
} from "../../../src/admin/admin-input.js";
import { BrokerError } from "../../../src/errors.js";

/** The code of the BrokerError `run` throws (fails the test if it throws nothing or something else). */
function thrownCode(run: () => unknown): string {
  try {
    run();
  } catch (err) {
    expect(err).toBeInstanceOf(BrokerError);
    return err instanceof BrokerError ? err.code : "not a BrokerError";
  }
  throw new Error("expected the call to throw");
}
const NO_FILTERS = {
  limit: 0,
  afterSeq: 0n,
  userRef: "",
  action: "",
  callerKeyId: "",
  since: undefined,
  until: undefined,
};

describe("admin input", () => {
  it("accepts a caller key id and refuses anything else", () => {
    expect(parseCallerKeyId("ck_0123456789abcdef")).toBe("ck_0123456789abcdef");
    expect(thrownCode(() => parseCallerKeyId("ck_0123"))).toBe("invalid_argument");
  });

  it("turns expires_in_days into an expiry, 0 into never, and refuses more than the limit", () => {
    const now = new Date("2026-01-01T00:00:00Z");
    expect(parseCallerKeyExpiry(0, now)).toBeNull();
    expect(parseCallerKeyExpiry(2, now)).toEqual(new Date("2026-01-03T00:00:00Z"));
    expect(thrownCode(() => parseCallerKeyExpiry(ADMIN_LIMITS.maxExpiryDays + 1, now))).toBe(
      "invalid_argument",
    );
  });

  it("names a user by user_ref or by subject, never by neither", () => {
    const ref = "ab".repeat(32);
    const viaSubject = Buffer.alloc(32, 7);
    expect(parseUserSelector({ case: "userRef", value: ref }, () => viaSubject)).toEqual(
      Buffer.from(ref, "hex"),
    );
    expect(parseUserSelector({ case: "subject", value: "auth0|u" }, () => viaSubject)).toBe(viaSubject);
    const refused = [
      { case: "userRef", value: "AB" },
      { case: "subject", value: "" },
      { case: undefined },
    ] as const;
    for (const user of refused) {
      expect(thrownCode(() => parseUserSelector(user, () => viaSubject))).toBe("invalid_argument");
    }
  });

  it("reads empty audit filters as none and a zero limit as the default", () => {
    expect(parseAuditQuery(NO_FILTERS)).toEqual({ limit: ADMIN_LIMITS.defaultAuditLimit });
  });

  it("carries every given audit filter through", () => {
    const since = new Date("2026-01-01T00:00:00Z");
    const until = new Date("2026-02-01T00:00:00Z");
    expect(
      parseAuditQuery({
        limit: 5,
        afterSeq: 9n,
        userRef: "cd".repeat(32),
        action: "secret.put",
        callerKeyId: "ck_0123456789abcdef",
        since,
        until,
      }),
    ).toEqual({
      limit: 5,
      afterSeq: 9,
      userRef: Buffer.from("cd".repeat(32), "hex"),
      action: "secret.put",
      callerKeyId: "ck_0123456789abcdef",
      since,
      until,
    });
  });

  it.each([
    ["a user_ref that is not 64 lowercase hex", { userRef: "AB".repeat(32) }],
    ["an action that is not verb.noun", { action: "drop table" }],
    ["a malformed caller key id", { callerKeyId: "ck_x" }],
    ["an after_seq beyond 2^53", { afterSeq: 2n ** 53n }],
    ["a time before year 1", { since: new Date(Date.UTC(0, 0, 1) - 1) }],
    ["a time after year 9999", { until: new Date(Date.UTC(10000, 0, 1)) }],
    ["an invalid date", { since: new Date(Number.NaN) }],
  ])("refuses %s with INVALID_ARGUMENT", (_name, override) => {
    expect(thrownCode(() => parseAuditQuery({ ...NO_FILTERS, ...override }))).toBe("invalid_argument");
  });
});
