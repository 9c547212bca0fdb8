import { describe, expect, it } from "vitest";
import {
  checkCallerPath,
  compilePathPattern,
  pathPatternProblem,
  resolveUpstreamUrl,
} from "../../../src/outbound/path-guard.js";
import { brokerCodeOf } from "../../support/broker-errors.js";

describe("caller path guard (C24, C25)", () => {
  it.each([
    ["/../admin"],
    ["/v1/../admin"],
    ["/v1/./x"],
    ["/v1/.."],
    ["/%2e%2e/admin"],
    ["/%2E%2E/admin"],
    ["/.%2e/admin"],
    ["/v1%2fadmin"],
    ["/v1%2Fadmin"],
    ["/v1%5cadmin"],
    ["/v1%252e%252e/admin"],
    ["/v1%00"],
    ["/v1%0d%0aHost:%20evil"],
    ["//evil.com/x"],
    ["/v1//x"],
    ["/v1\\..\\admin"],
    ["\\\\evil.com\\x"],
    ["/a.com@evil.com"],
    ["/%2F@evil.com"],
    ["/evil#@a.com"],
    ["/v1?x=1"],
    ["https://evil.com/x"],
    ["evil.com/x"],
    ["http:/evil.com"],
    [""],
    ["/v1/ x"],
    ["/v1/\tx"],
    ["/v1/\u0000"],
    ["/v1/\r\nHost: evil"],
    ["/v1/ünïcode"],
    ["/v1/..;/admin"],
    ["/v1/.../x"],
    ["/v1/%zz"],
    ["/v1/%2"],
    [`/${"a".repeat(2048)}`],
  ])("C25 refuses %j with invalid_argument", (path) => {
    expect(brokerCodeOf(() => checkCallerPath(path))).toBe("invalid_argument");
  });

  it.each([
    "/",
    "/v1/charges",
    "/v1/charges/ch_123",
    "/repos/o/r/contents/a.b.c",
    "/v1/x%20y",
    "/v1/a:b;c=d",
    "/v1/trailing/",
    "/v1/%40tag",
  ])("accepts the well-formed path %j unchanged", (path) => {
    expect(checkCallerPath(path)).toBe(path);
  });
});

describe("percent escapes that are not UTF-8", () => {
  it.each(["/%aevil.com", "/%A0", "/v1/%ff", "/v1/%c3", "/v1/%e2%82", "/v1/%c0%af"])(
    "W2 refuses %j: a hex escape that is not valid UTF-8 means something different to every server",
    (path) => {
      expect(brokerCodeOf(() => checkCallerPath(path))).toBe("invalid_argument");
    },
  );

  it.each(["/v1/%c3%bc", "/v1/%e2%82%ac", "/v1/%F0%9F%94%91"])(
    "accepts the UTF-8 escape %j unchanged",
    (path) => {
      expect(checkCallerPath(path)).toBe(path);
    },
  );
});

describe("path patterns", () => {
  it("'*' matches exactly one non-empty segment", () => {
    const p = compilePathPattern("/v1/charges/*");
    expect(p.matches("/v1/charges/ch_1")).toBe(true);
    expect(p.matches("/v1/charges")).toBe(false);
    expect(p.matches("/v1/charges/")).toBe(false);
    expect(p.matches("/v1/charges/ch_1/refunds")).toBe(false);
  });

  it("'**' matches zero or more trailing segments", () => {
    const p = compilePathPattern("/api/v3/**");
    expect(p.matches("/api/v3")).toBe(true);
    expect(p.matches("/api/v3/account")).toBe(true);
    expect(p.matches("/api/v3/a/b/c")).toBe(true);
    expect(p.matches("/api/v2/account")).toBe(false);
    expect(p.matches("/api/v30")).toBe(false);
  });

  it("literal segments are case-sensitive and exact", () => {
    const p = compilePathPattern("/user");
    expect(p.matches("/user")).toBe(true);
    expect(p.matches("/User")).toBe(false);
    expect(p.matches("/users")).toBe(false);
    expect(p.matches("/user/x")).toBe(false);
  });

  it.each([["v1/x"], ["/a/**/b"], ["/a/../b"], ["/a/b*"], ["/a//b"]])(
    "rejects the malformed pattern %j",
    (pattern) => {
      expect(pathPatternProblem(pattern)).toBeDefined();
    },
  );
});

describe("upstream URL", () => {
  it("appends the caller path to the base path and keeps the base origin", () => {
    const url = resolveUpstreamUrl(new URL("https://graph.facebook.com/v23.0"), "/me/accounts");
    expect(url.href).toBe("https://graph.facebook.com/v23.0/me/accounts");
  });

  it("C24 works with a base URL that has no path", () => {
    expect(resolveUpstreamUrl(new URL("https://api.github.com"), "/user").href).toBe(
      "https://api.github.com/user",
    );
  });

  it("C24 refuses anything that would change origin or path once parsed (defence in depth)", () => {
    const base = new URL("https://api.github.com");
    // These never get past checkCallerPath; the URL comparison must still catch them.
    expect(brokerCodeOf(() => resolveUpstreamUrl(base, "/../x"))).toBe("invalid_argument");
    expect(brokerCodeOf(() => resolveUpstreamUrl(base, "@evil.com/"))).toBe("invalid_argument");
    expect(brokerCodeOf(() => resolveUpstreamUrl(base, ".evil.com/"))).toBe("invalid_argument");
    expect(brokerCodeOf(() => resolveUpstreamUrl(base, "/x?y"))).toBe("invalid_argument");
    expect(brokerCodeOf(() => resolveUpstreamUrl(base, "/x#y"))).toBe("invalid_argument");
  });
});
