import { fileURLToPath } from "node:url";
import { beforeAll, describe, expect, it } from "vitest";
import type { BrokerError } from "../../../src/errors.js";
import { loadProviderRegistry, type ProviderRegistry } from "../../../src/outbound/provider-registry.js";
import { type OutboundRequest, planRequest } from "../../../src/outbound/request-plan.js";
import { brokerCodeOf } from "../../support/broker-errors.js";

// Everything the caller chooses is checked before any I/O; these run against the SHIPPED
// definitions, so they also pin what production allows.

let registry: ProviderRegistry;
beforeAll(async () => {
  registry = await loadProviderRegistry(
    fileURLToPath(new URL("../../../providers/providers.json", import.meta.url)),
    {
      production: true,
    },
  );
});

const b = (s: string): Buffer => Buffer.from(s, "utf8");
const FIELDS: Record<string, Map<string, Buffer>> = {
  github: new Map([["token", b("ghp_secret")]]),
  binance: new Map([
    ["api_key", b("k")],
    ["api_secret", b("s")],
  ]),
  kraken: new Map([
    ["api_key", b("k")],
    ["api_secret", b("c2VjcmV0")],
  ]),
  "facebook-graph": new Map([
    ["access_token", b("t")],
    ["app_secret", b("s")],
  ]),
};

function plan(providerId: string, overrides: Partial<OutboundRequest> = {}) {
  const provider = registry.get(providerId);
  if (provider === undefined) throw new Error(providerId);
  return planRequest(
    provider,
    {
      providerId,
      secretId: "s1",
      fields: FIELDS[providerId] ?? new Map(),
      method: "GET",
      path: "/user",
      query: [],
      headers: [],
      body: new Uint8Array(),
      ...overrides,
    },
    { now: () => 1_700_000_000_000, nextNonce: () => "1700000000000000" },
  );
}

describe("request plan", () => {
  it("builds the URL from the provider's base URL, never from the caller", () => {
    const p = plan("github", { path: "/repos/o/r/issues", query: [["state", "open"]] });
    expect(p.url.origin).toBe("https://api.github.com");
    expect(p.pathAndQuery).toBe("/repos/o/r/issues?state=open");
  });

  it("answers permission_denied for a well-formed path outside the patterns", () => {
    expect(brokerCodeOf(() => plan("github", { path: "/admin/users" }))).toBe("permission_denied");
  });

  it("answers permission_denied for a method the provider does not allow", () => {
    expect(brokerCodeOf(() => plan("kraken", { method: "GET", path: "/0/private/Balance" }))).toBe(
      "permission_denied",
    );
  });

  it("answers invalid_argument for a method that is not an upper-case HTTP method", () => {
    expect(brokerCodeOf(() => plan("github", { method: "get" }))).toBe("invalid_argument");
    expect(brokerCodeOf(() => plan("github", { method: "CONNECT" }))).toBe("invalid_argument");
  });

  it("answers failed_precondition listing missing fields, never their values", () => {
    const err = (() => {
      try {
        plan("binance", { path: "/api/v3/account", fields: new Map([["api_key", b("k")]]) });
      } catch (e) {
        return e as BrokerError;
      }
      return undefined;
    })();
    expect(err?.code).toBe("failed_precondition");
    expect(err?.message).toBe("secret is missing required field(s): api_secret");
  });

  it.each([
    ["binance", "/api/v3/account", "signature"],
    ["binance", "/api/v3/account", "SIGNATURE"],
    ["binance", "/api/v3/account", "timestamp"],
    ["facebook-graph", "/me", "access_token"],
    ["facebook-graph", "/me", "appsecret_proof"],
  ])("C34 %s refuses a caller-supplied %s query parameter", (providerId, path, name) => {
    expect(brokerCodeOf(() => plan(providerId, { path, query: [[name, "forged"]] }))).toBe(
      "invalid_argument",
    );
  });

  it("C34 Kraken refuses a caller-supplied nonce in the form body", () => {
    expect(
      brokerCodeOf(() =>
        plan("kraken", { method: "POST", path: "/0/private/Balance", body: b("nonce=1&asset=XBT") }),
      ),
    ).toBe("invalid_argument");
  });

  it("C30 refuses the header the scheme injects, however it is cased", () => {
    expect(
      brokerCodeOf(() => plan("binance", { path: "/api/v3/account", headers: [["x-mbx-apikey", "mine"]] })),
    ).toBe("invalid_argument");
    expect(brokerCodeOf(() => plan("github", { headers: [["AUTHORIZATION", "Bearer mine"]] }))).toBe(
      "invalid_argument",
    );
  });

  it("C30 injects the credential last and forces identity encoding", () => {
    const p = plan("github", { headers: [["accept", "application/vnd.github+json"]] });
    expect(p.headers.map(([n]) => n.toLowerCase())).toEqual([
      "accept",
      "accept-encoding",
      "user-agent",
      "authorization",
    ]);
    expect(p.headers.find(([n]) => n === "accept-encoding")?.[1]).toBe("identity");
  });

  it("refuses a body on GET and query values that are not valid Unicode", () => {
    expect(brokerCodeOf(() => plan("github", { body: b("x") }))).toBe("invalid_argument");
    expect(brokerCodeOf(() => plan("github", { query: [["q", "\uD800"]] }))).toBe("invalid_argument");
  });

  it("H1 a field the broker never sent is not used as a scrub pattern", () => {
    const fields = new Map([
      ["token", b("ghp_secret_value")],
      ["e", b("e")],
      ["note", b("a field the scheme never reads")],
    ]);
    const secrets = plan("github", { fields }).secrets.map((s) => Buffer.from(s).toString());
    expect(secrets).toEqual(["ghp_secret_value"]);
  });

  it("lists every secret field and derived credential for the scrubber", () => {
    const p = plan("facebook-graph", { path: "/me" });
    const secrets = p.secrets.map((s) => Buffer.from(s).toString());
    expect(secrets).toContain("t");
    expect(secrets).toContain("s");
    expect(secrets.some((s) => /^[0-9a-f]{64}$/.test(s))).toBe(true);
  });

  it("F5 sends a Binance POST body without a content type as a form, signed with that header", () => {
    const p = plan("binance", {
      method: "POST",
      path: "/api/v3/order",
      body: b("symbol=BTCUSDT&side=BUY"),
    });
    expect(p.headers.filter(([n]) => n.toLowerCase() === "content-type")).toEqual([
      ["content-type", "application/x-www-form-urlencoded"],
    ]);
  });

  it("F5 refuses a Binance body whose content type is not a form, rather than relabelling it", () => {
    expect(
      brokerCodeOf(() =>
        plan("binance", {
          method: "POST",
          path: "/api/v3/order",
          headers: [["Content-Type", "application/json"]],
          body: b('{"symbol":"BTCUSDT"}'),
        }),
      ),
    ).toBe("invalid_argument");
  });

  it.each([
    ["signature "],
    [" Signature"],
    ["signature[]"],
    ["signature[0]"],
    ["sig%6Eature"],
    ["sig%256Eature"],
    ["x;signature"],
    ["timestamp;x"],
  ])("L4 refuses the reserved Binance parameter spelled %j", (name) => {
    expect(brokerCodeOf(() => plan("binance", { path: "/api/v3/account", query: [[name, "1"]] }))).toBe(
      "invalid_argument",
    );
  });

  it("L4 refuses a reserved parameter smuggled after ';' in a value", () => {
    expect(
      brokerCodeOf(() => plan("binance", { path: "/api/v3/account", query: [["x", "1;timestamp=1"]] })),
    ).toBe("invalid_argument");
  });

  it("L4 refuses a reserved Kraken body field spelled nonce[] or with a trailing space", () => {
    for (const body of ["nonce[]=1&pair=XBTUSD", "nonce%20=1", "NONCE=1"]) {
      expect(
        brokerCodeOf(() => plan("kraken", { method: "POST", path: "/0/private/Balance", body: b(body) })),
      ).toBe("invalid_argument");
    }
  });

  it.each([
    ["X-Original-URL", "/admin"],
    ["X-Rewrite-URL", "/admin"],
    ["X-HTTP-Method-Override", "DELETE"],
    ["X-HTTP-Method", "DELETE"],
    ["X-Method-Override", "DELETE"],
    ["X-Forwarded-Host", "evil.example"],
    ["X-Host", "evil.example"],
    ["Forwarded", "host=evil.example"],
    ["X_MBX_APIKEY", "other-key"],
  ])("L4 refuses the override or credential header %s", (name, value) => {
    expect(brokerCodeOf(() => plan("binance", { path: "/api/v3/account", headers: [[name, value]] }))).toBe(
      "invalid_argument",
    );
  });

  it("L4 still accepts ordinary parameters that merely contain a reserved word", () => {
    const p = plan("binance", {
      path: "/api/v3/account",
      query: [
        ["recvWindow", "5000"],
        ["note", "a;b"],
      ],
    });
    expect(p.pathAndQuery).toContain("recvWindow=5000");
  });
});
