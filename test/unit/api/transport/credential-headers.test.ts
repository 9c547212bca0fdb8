import { describe, expect, it } from "vitest";
import { bearerTokenFrom, callerKeyFrom } from "../../../../src/api/transport/credential-headers.js";

const JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1In0.c2ln-_~+/=";

describe("bearerTokenFrom", () => {
  it.each([
    ["Bearer", `Bearer ${JWT}`],
    ["bearer", `bearer ${JWT}`],
    ["BEARER", `BEARER ${JWT}`],
    ["two spaces", `Bearer  ${JWT}`],
  ])("reads the token after the scheme (%s)", (_case, value) => {
    expect(bearerTokenFrom(value)).toBe(JWT);
  });

  it.each([
    ["absent", undefined],
    ["empty", ""],
    ["another scheme", `Basic ${JWT}`],
    ["scheme only", "Bearer"],
    ["scheme and space", "Bearer "],
    ["no space", `Bearer${JWT}`],
    ["two tokens", `Bearer ${JWT} ${JWT}`],
    ["repeated header, joined by HTTP", `Bearer ${JWT}, Bearer other`],
    ["a tab", `Bearer\t${JWT}`],
    ["a non-ASCII byte", "Bearer tok\u00e9n"],
    ["a newline", `Bearer ${JWT}\nx`],
    ["padding in the middle", "Bearer ab=cd"],
  ])("treats a malformed value (%s) as no token", (_case, value) => {
    expect(bearerTokenFrom(value)).toBeUndefined();
  });
});

describe("callerKeyFrom", () => {
  it("accepts a single visible-ASCII value", () => {
    expect(callerKeyFrom("kb_live_AbC123.x-y")).toBe("kb_live_AbC123.x-y");
  });

  it.each([
    ["absent", undefined],
    ["empty", ""],
    ["repeated header, joined by HTTP", "kb_live_a, kb_live_b"],
    ["a comma", "kb_live_a,kb_live_b"],
    ["a space", "kb live"],
    ["a non-ASCII byte", "kb_live_\u00ff"],
  ])("treats %s as no caller key", (_case, value) => {
    expect(callerKeyFrom(value)).toBeUndefined();
  });
});
