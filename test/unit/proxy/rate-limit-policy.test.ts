import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { loadProviderRegistry, parseProviderRegistry } from "../../../src/outbound/provider-registry.js";
import { createRateLimitPolicy } from "../../../src/proxy/rate-limit-policy.js";

const SHIPPED = fileURLToPath(new URL("../../../providers/providers.json", import.meta.url));

const exchange = {
  id: "exchange",
  displayName: "Exchange",
  baseUrl: "https://api.exchange.example",
  allowedHosts: ["api.exchange.example"],
  allowedMethods: ["GET", "POST"],
  pathPatterns: ["/**"],
  requiredFields: ["token"],
  auth: { type: "bearer", field: "token" },
  timeoutMs: 5000,
  maxResponseBytes: 1024,
  operations: [
    { class: "transfer", methods: ["POST"], paths: ["/withdraw"] },
    { class: "read", methods: ["GET"], paths: ["/**"] },
  ],
  defaultGrant: ["read"],
  rateLimits: {
    perSecret: { perMinute: 600 },
    perCallerKey: { perMinute: 60_000 },
    classes: { transfer: { perSecret: { perHour: 5 } } },
  },
};

const call = { provider: "exchange", secretId: "sec-1", callerKeyId: "ck-1" };

describe("rate limit policy", () => {
  const registry = parseProviderRegistry({ providers: [exchange] }, { production: true });
  const policy = createRateLimitPolicy({
    limitsOf: (id) => registry.get(id)?.definition.rateLimits,
    defaults: { perSecret: { perMinute: 100 } },
  });

  it("H107 applies the provider-wide limits per secret and per caller key to every call", () => {
    expect(policy.bucketsFor({ ...call, operationClass: "read" })).toEqual([
      { key: "s:sec-1:*:m", limit: 600, windowMs: 60_000, what: "this secret" },
      { key: "c:ck-1:exchange:*:m", limit: 60_000, windowMs: 60_000, what: "this caller key" },
    ]);
  });

  it("H107 adds a class's own limit on top of the provider-wide ones", () => {
    expect(policy.bucketsFor({ ...call, operationClass: "transfer" }).map((b) => [b.key, b.limit])).toEqual([
      ["s:sec-1:*:m", 600],
      ["c:ck-1:exchange:*:m", 60_000],
      ["s:sec-1:transfer:h", 5],
    ]);
  });

  it("H107 uses the environment's defaults only for a provider that declares no limit of its own", () => {
    expect(policy.bucketsFor({ ...call, provider: "other", operationClass: undefined })).toEqual([
      { key: "s:sec-1:*:m", limit: 100, windowMs: 60_000, what: "this secret" },
    ]);
    const none = createRateLimitPolicy({ limitsOf: () => undefined, defaults: {} });
    expect(none.bucketsFor({ ...call, operationClass: undefined })).toEqual([]);
  });

  it("H107 refuses a registry whose limit names no window, a non-positive count or an unknown class", () => {
    for (const rateLimits of [
      { perSecret: {} },
      { perSecret: { perMinute: 0 } },
      { perSecret: { perDay: 5 } },
    ]) {
      let refused: unknown;
      try {
        parseProviderRegistry({ providers: [{ ...exchange, rateLimits }] }, { production: true });
      } catch (err) {
        refused = err;
      }
      expect(refused).toBeInstanceOf(BrokerError);
      expect((refused as BrokerError).message).toContain("rateLimits");
    }
  });

  it("H107 ships a per-secret limit for every shipped provider", async () => {
    const shipped = await loadProviderRegistry(SHIPPED, { production: true });
    for (const id of shipped.ids()) expect(shipped.get(id)?.definition.rateLimits?.perSecret).toBeDefined();
  });
});
