import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { loadProviderRegistry, parseProviderRegistry } from "../../../src/outbound/provider-registry.js";

const SHIPPED = fileURLToPath(new URL("../../../providers/providers.json", import.meta.url));

function provider(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    id: "example",
    displayName: "Example",
    baseUrl: "https://api.example.com/v1",
    allowedHosts: ["api.example.com"],
    allowedMethods: ["GET"],
    pathPatterns: ["/**"],
    requiredFields: ["token"],
    auth: { type: "bearer", field: "token" },
    timeoutMs: 5000,
    maxResponseBytes: 1024,
    operations: [{ class: "read", methods: ["GET"], paths: ["/**"] }],
    defaultGrant: ["read"],
    ...overrides,
  };
}

function problemsOf(raw: unknown, production = true): string {
  try {
    parseProviderRegistry(raw, { production });
  } catch (err) {
    expect(err).toBeInstanceOf(BrokerError);
    expect((err as BrokerError).code).toBe("failed_precondition");
    return (err as BrokerError).message;
  }
  throw new Error("expected the registry to be refused");
}

describe("provider registry", () => {
  it("loads the shipped definitions in production mode", async () => {
    const registry = await loadProviderRegistry(SHIPPED, { production: true });
    expect([...registry.ids()].sort()).toEqual(
      [
        "binance",
        "coinbase-exchange",
        "facebook-graph",
        "facebook-login",
        "github",
        "github-oauth",
        "google",
        "kraken",
        "openai",
        "slack",
        "stripe",
      ].sort(),
    );
    expect(registry.get("kraken")?.definition.auth.type).toBe("hmac");
    expect(registry.get("nope")).toBeUndefined();
  });

  it("lists every problem at once", () => {
    const message = problemsOf({
      providers: [
        provider({ id: "a", baseUrl: "http://api.example.com" }),
        provider({ id: "b", allowedHosts: ["other.example.com"] }),
        provider({ id: "c", requiredFields: ["other"] }),
        provider({ id: "d", timeoutMs: -1 }),
        provider({ id: "e", pathPatterns: ["/a/**/b"] }),
      ],
    });
    expect(message).toContain("(a): baseUrl must be https");
    expect(message).toContain('(b): baseUrl host "api.example.com" is not in allowedHosts');
    expect(message).toContain('(c): auth uses field "token" which is not in requiredFields');
    expect(message).toContain("(d).timeoutMs");
    expect(message).toContain("(e): pathPatterns");
  });

  it("refuses allowLoopback and IP-literal hosts in production, but not in development", () => {
    const loopback = provider({
      baseUrl: "https://127.0.0.1:8443",
      allowedHosts: ["127.0.0.1"],
      allowLoopback: true,
    });
    const message = problemsOf({ providers: [loopback] });
    expect(message).toContain("allowLoopback is for development and tests only");
    expect(message).toContain("is an IP literal");
    expect(parseProviderRegistry({ providers: [loopback] }, { production: false }).ids()).toEqual([
      "example",
    ]);
  });

  it("allows plain http only for loopback providers outside production", () => {
    const http = provider({ baseUrl: "http://localhost:8080", allowedHosts: ["localhost"] });
    expect(problemsOf({ providers: [http] }, false)).toContain("baseUrl must be https");
    expect(
      parseProviderRegistry({ providers: [{ ...http, allowLoopback: true }] }, { production: false }).ids(),
    ).toEqual(["example"]);
  });

  it.each([
    ["API.EXAMPLE.COM"],
    ["api.example.com."],
    ["аpi.example.com"],
    ["api.example.com:443"],
    ["user@api.example.com"],
  ])("C24 refuses the non-canonical allowed host %j", (host) => {
    expect(problemsOf({ providers: [provider({ allowedHosts: ["api.example.com", host] })] })).toContain(
      "must be a canonical lower-case hostname",
    );
  });

  it("refuses a base URL with credentials, a query or a fragment", () => {
    expect(problemsOf({ providers: [provider({ baseUrl: "https://u:p@api.example.com" })] })).toContain(
      "must not carry credentials",
    );
    expect(problemsOf({ providers: [provider({ baseUrl: "https://api.example.com/?x=1" })] })).toContain(
      "must not have a query",
    );
  });

  it("refuses duplicate ids and unknown properties", () => {
    expect(problemsOf({ providers: [provider(), provider()] })).toContain('duplicate id "example"');
    expect(problemsOf({ providers: [provider({ followRedirects: true })] })).toContain("followRedirects");
  });

  it("refuses an HMAC recipe that signs a nonce it never places, or places one in the body of a GET", () => {
    const recipe = {
      keyField: "k",
      secretField: "s",
      algorithm: "sha256",
      secretEncoding: "raw",
      signatureEncoding: "hex",
      apiKeyHeader: "X-Key",
      signature: { in: "header", name: "X-Sign" },
      message: [{ type: "nonce" }],
    };
    const message = problemsOf({
      providers: [
        provider({ id: "a", requiredFields: ["k", "s"], auth: { type: "hmac", recipe } }),
        provider({
          id: "b",
          requiredFields: ["k", "s"],
          auth: { type: "hmac", recipe: { ...recipe, nonce: { in: "body", name: "nonce" } } },
        }),
      ],
    });
    expect(message).toContain("(a): auth.recipe signs a nonce but does not say where it goes");
    expect(message).toContain("(b): auth.recipe puts values in the body, so GET/HEAD cannot be allowed");
  });

  it("H88 refuses a default grant with a dangerous class, and classes or patterns it does not know", () => {
    const message = problemsOf({
      providers: [
        provider({ id: "a", defaultGrant: ["read", "transfer", "webhooks"] }),
        provider({ id: "b", operations: [{ class: "admin", methods: ["GET"], paths: ["/**"] }] }),
        provider({ id: "c", operations: [{ class: "read", methods: ["GET"], paths: ["/a/**/b"] }] }),
        provider({ id: "d", operations: [] }),
        provider({ id: "e", defaultGrant: ["everything"] }),
      ],
    });
    expect(message).toContain("(a): defaultGrant must not include a dangerous class (transfer, webhooks)");
    expect(message).toContain("(b).operations.0.class");
    expect(message).toContain(`(c): operations[0].paths "/a/**/b"`);
    expect(message).toContain("(d).operations");
    expect(message).toContain("(e).defaultGrant.0");
  });

  it("H88 refuses a provider without operation classes or a default grant", () => {
    const { operations: _o, defaultGrant: _g, ...bare } = provider();
    const message = problemsOf({ providers: [bare] });
    expect(message).toContain("(example).operations");
    expect(message).toContain("(example).defaultGrant");
  });

  it("reports an unreadable file without crashing", async () => {
    await expect(
      loadProviderRegistry("/nonexistent/providers.json", { production: true }),
    ).rejects.toMatchObject({
      code: "failed_precondition",
    });
  });
});
