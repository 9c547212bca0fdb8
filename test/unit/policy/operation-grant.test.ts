import { describe, expect, it } from "vitest";
import {
  callerAllowsClass,
  checkOperation,
  compareGrants,
  grantLabel,
  parseGrant,
} from "../../../src/policy/operation-grant.js";
import { brokerErrorThrownBy } from "../../support/broker-errors.js";

describe("operation grants and caller scopes (SPEC I10)", () => {
  it("H90 lets proxy:call use every class but the dangerous ones, which need their own scope", () => {
    const legacy = new Set(["proxy:call"]);
    expect(["read", "write", "trade"].every((c) => callerAllowsClass(legacy, c as "read"))).toBe(true);
    for (const dangerous of ["transfer", "credentials", "webhooks"] as const) {
      expect(callerAllowsClass(legacy, dangerous)).toBe(false);
      expect(callerAllowsClass(new Set([`proxy:${dangerous}`]), dangerous)).toBe(true);
    }
    const readOnly = new Set(["proxy:read"]);
    expect(callerAllowsClass(readOnly, "read")).toBe(true);
    expect(callerAllowsClass(readOnly, "trade")).toBe(false);
  });

  it("H90 refuses in order: unclassified, then the caller's scope, then the secret's grant", () => {
    const scopes = new Set(["proxy:read"]);
    expect(brokerErrorThrownBy(() => checkOperation(undefined, ["read"], scopes))).toMatchObject({
      code: "permission_denied",
      reason: "operation_unclassified",
    });
    expect(brokerErrorThrownBy(() => checkOperation("trade", [], scopes))).toMatchObject({
      code: "permission_denied",
      reason: "caller_key_scope_missing",
      message: "caller key lacks the proxy:trade scope",
    });
    expect(brokerErrorThrownBy(() => checkOperation("read", ["trade"], scopes))).toMatchObject({
      code: "permission_denied",
      reason: "operation_not_granted",
    });
    expect(checkOperation("read", ["read"], scopes)).toBe("read");
  });

  it("H91 parses a grant to its stored form and refuses an unknown class as invalid_argument", () => {
    expect(parseGrant(["trade", "read", "trade"])).toEqual(["read", "trade"]);
    expect(brokerErrorThrownBy(() => parseGrant(["read", "withdraw"]))).toMatchObject({
      code: "invalid_argument",
      message: "unknown operation class(es): withdraw",
    });
    // A value that is not a plausible class name is not echoed back.
    expect(brokerErrorThrownBy(() => parseGrant(["Bearer abc.def"])).message).toBe("unknown operation class");
  });

  it("H91 tells a widening from a narrowing for the audit trail", () => {
    expect(compareGrants(undefined, ["read"])).toBe("new");
    expect(compareGrants(["read", "trade"], ["read", "trade"])).toBe("same");
    expect(compareGrants(["read", "trade"], ["read"])).toBe("narrowed");
    expect(compareGrants(["read"], ["read", "transfer"])).toBe("widened");
    expect(compareGrants(["read", "trade"], ["transfer"])).toBe("widened");
    expect(grantLabel([])).toBe("none");
    expect(grantLabel(["read", "trade"])).toBe("read,trade");
  });
});
