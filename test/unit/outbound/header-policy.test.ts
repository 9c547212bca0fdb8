import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import {
  checkCallerHeaders,
  filterResponseHeaders,
  HEADER_LIMITS,
} from "../../../src/outbound/header-policy.js";

function refusal(headers: Array<[string, string]>, reserved: string[] = []): BrokerError | undefined {
  try {
    checkCallerHeaders(headers, new Set(reserved));
  } catch (err) {
    if (err instanceof BrokerError) return err;
    throw err;
  }
  return undefined;
}

describe("caller headers (C30)", () => {
  it.each([
    "Authorization",
    "authorization",
    "Proxy-Authorization",
    "Proxy-Connection",
    "Cookie",
    "Host",
    "X-Api-Key",
    "Connection",
    "Keep-Alive",
    "TE",
    "Trailer",
    "Transfer-Encoding",
    "Upgrade",
    "Content-Length",
    "Expect",
    "Accept-Encoding",
    "X-HTTP-Method-Override",
    "X-Forwarded-Host",
  ])("C30 refuses the broker-owned header %s with invalid_argument", (name) => {
    const err = refusal([[name, "x"]]);
    expect(err?.code).toBe("invalid_argument");
    expect(err?.message).toContain("is set by the broker");
  });

  it("C30 refuses a header the provider's scheme injects", () => {
    expect(refusal([["X-MBX-APIKEY", "mine"]], ["x-mbx-apikey"])?.code).toBe("invalid_argument");
    expect(refusal([["API-Sign", "forged"]], ["api-sign"])?.code).toBe("invalid_argument");
  });

  it.each([
    ["x-a", "v\r\nHost: evil"],
    ["x-a", "v\nx"],
    ["x-a", "v\rx"],
    ["x-a", "v\u0000x"],
    ["x-a\r\nHost", "v"],
    ["x-a", "v\u0001"],
    ["x-a", "ünïcode"],
    ["bad name", "v"],
    ["", "v"],
    ["x:a", "v"],
  ])("C30 refuses CR/LF/NUL, control characters and non-tokens: %j", (name, value) => {
    expect(refusal([[name, value]])?.code).toBe("invalid_argument");
  });

  it("enforces count and size limits", () => {
    const many = Array.from({ length: HEADER_LIMITS.maxCount + 1 }, (_, i): [string, string] => [
      `x-h${i}`,
      "v",
    ]);
    expect(refusal(many)?.code).toBe("invalid_argument");
    expect(refusal([["x-big", "a".repeat(HEADER_LIMITS.maxValueLength + 1)]])?.code).toBe("invalid_argument");
    const total = Array.from({ length: 8 }, (_, i): [string, string] => [`x-h${i}`, "a".repeat(5000)]);
    expect(refusal(total)?.message).toBe("caller headers are too large");
  });

  it("passes ordinary headers through in order", () => {
    expect(
      checkCallerHeaders(
        [
          ["Content-Type", "application/json"],
          ["Accept", "application/json"],
          ["Idempotency-Key", "abc"],
        ],
        new Set(),
      ),
    ).toEqual([
      ["Content-Type", "application/json"],
      ["Accept", "application/json"],
      ["Idempotency-Key", "abc"],
    ]);
  });
});

describe("response headers", () => {
  it("drops hop-by-hop, length and encoding headers and scrubs every value", () => {
    const out = filterResponseHeaders(
      {
        "content-type": "application/json",
        connection: "keep-alive",
        "transfer-encoding": "chunked",
        "content-length": "10",
        "content-encoding": "gzip",
        "set-cookie": ["a=SECRET", "b=2"],
        location: "https://x/?k=SECRET",
      },
      (v) => v.replaceAll("SECRET", "[REDACTED]"),
    );
    expect(out).toEqual([
      ["content-type", "application/json"],
      ["set-cookie", "a=[REDACTED]"],
      ["set-cookie", "b=2"],
      ["location", "https://x/?k=[REDACTED]"],
    ]);
  });
});
