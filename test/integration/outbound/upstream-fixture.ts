import { readFileSync } from "node:fs";
import { isIPv6 } from "node:net";
import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../../src/log/logger.js";
import type { Resolver } from "../../../src/outbound/guarded-connector.js";
import { createOutboundClient, type OutboundClient } from "../../../src/outbound/outbound-client.js";
import { type ProviderRegistry, parseProviderRegistry } from "../../../src/outbound/provider-registry.js";
import type { OutboundRequest } from "../../../src/outbound/request-plan.js";
import {
  canaryCredentials,
  type HttpsUpstream,
  startHttpsUpstream,
  UPSTREAM_HOST,
  type UpstreamCredentials,
} from "../../support/https-upstream.js";
import { TEST_OPERATIONS } from "../../support/loopback-providers.js";

// Shared set-up for the outbound integration suites: one HTTPS upstream, a registry whose
// providers point at it (reusing the SHIPPED auth recipes, so the vendor-style verifiers in the
// upstream check the real definitions), a fake DNS resolver and a log capture.

const shipped = JSON.parse(
  readFileSync(new URL("../../../providers/providers.json", import.meta.url), "utf8"),
) as {
  providers: Array<{ id: string; auth: unknown }>;
};

export function shippedAuth(id: string): unknown {
  const p = shipped.providers.find((x) => x.id === id);
  if (p === undefined) throw new Error(`no shipped provider ${id}`);
  return p.auth;
}

/** A fake resolver: a fixed answer table, every lookup recorded. */
export function fakeResolver(table: Record<string, string[]>): { resolve: Resolver; lookups: string[] } {
  const lookups: string[] = [];
  const resolve: Resolver = async (hostname) => {
    lookups.push(hostname);
    const answers = table[hostname];
    if (answers === undefined)
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: "ENOTFOUND" });
    return answers.map((address) => ({ address, family: isIPv6(address) ? 6 : 4 }));
  };
  return { resolve, lookups };
}

/** Every log line as text, to scan for leaks. */
export function captureLogs(): { logger: Logger; lines: string[] } {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString("utf8"));
      done();
    },
  });
  return { logger: createLogger({ level: "debug", destination }), lines };
}

export interface Fixture {
  readonly upstream: HttpsUpstream;
  readonly creds: UpstreamCredentials;
  readonly registry: ProviderRegistry;
  readonly client: OutboundClient;
  readonly lookups: string[];
  readonly logs: string[];
  /** Every credential value, raw, for leak assertions. */
  readonly canaries: string[];
  close(): Promise<void>;
}

type Definition = Record<string, unknown>;

export function upstreamProviders(port: number): Definition[] {
  const origin = `https://${UPSTREAM_HOST}:${port}`;
  const base = (
    id: string,
    prefix: string,
    auth: unknown,
    requiredFields: string[],
    extra: Definition = {},
  ) => ({
    id,
    displayName: id,
    baseUrl: `${origin}/${prefix}`,
    allowedHosts: [UPSTREAM_HOST],
    allowedMethods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
    pathPatterns: ["/**"],
    requiredFields,
    auth,
    timeoutMs: 2000,
    maxResponseBytes: 1024 * 1024,
    allowLoopback: true,
    operations: TEST_OPERATIONS,
    defaultGrant: ["read", "write"],
    ...extra,
  });
  return [
    base("up-bearer", "bearer", { type: "bearer", field: "token" }, ["token"]),
    base("up-header", "header", { type: "header", name: "X-Upstream-Key", field: "key" }, ["key"]),
    base("up-query", "query", { type: "query", param: "api_key", field: "key" }, ["key"]),
    base("up-basic", "basic", { type: "basic", usernameField: "username", passwordField: "password" }, [
      "username",
      "password",
    ]),
    base("up-binance", "binance", shippedAuth("binance"), ["api_key", "api_secret"]),
    base("up-kraken", "kraken", shippedAuth("kraken"), ["api_key", "api_secret"], {
      allowedMethods: ["POST"],
      pathPatterns: ["/0/private/*"],
    }),
    // The same, with room for hundreds of concurrent TLS exchanges on a loaded 2-core machine.
    base("up-kraken-patient", "kraken", shippedAuth("kraken"), ["api_key", "api_secret"], {
      allowedMethods: ["POST"],
      pathPatterns: ["/0/private/*"],
      timeoutMs: 30_000,
    }),
    base("up-coinbase", "coinbase", shippedAuth("coinbase-exchange"), [
      "api_key",
      "api_secret",
      "passphrase",
    ]),
    base("up-facebook", "facebook", shippedAuth("facebook-graph"), ["access_token", "app_secret"]),
    base("up-strict", "bearer", { type: "bearer", field: "token" }, ["token"], {
      allowedMethods: ["GET"],
      pathPatterns: ["/ok", "/items/*"],
    }),
    // Same upstream, but as production would see it: no loopback allowed.
    base("up-no-loopback", "bearer", { type: "bearer", field: "token" }, ["token"], { allowLoopback: false }),
    base("up-short", "bearer", { type: "bearer", field: "token" }, ["token"], { timeoutMs: 300 }),
  ];
}

export async function startFixture(
  options: { table?: Record<string, string[]>; extraProviders?: (port: number) => Definition[] } = {},
): Promise<Fixture> {
  const creds = canaryCredentials();
  const upstream = await startHttpsUpstream(creds);
  const registry = parseProviderRegistry(
    { providers: [...upstreamProviders(upstream.port), ...(options.extraProviders?.(upstream.port) ?? [])] },
    { production: false },
  );
  const { resolve, lookups } = fakeResolver(options.table ?? { [UPSTREAM_HOST]: ["127.0.0.1"] });
  const { logger, lines } = captureLogs();
  const client = createOutboundClient({ registry, resolve, ca: upstream.ca, logger });
  return {
    upstream,
    creds,
    registry,
    client,
    lookups,
    logs: lines,
    canaries: [
      creds.bearer,
      creds.headerKey,
      creds.queryKey,
      creds.basicUser,
      creds.basicPass,
      creds.binanceKey,
      creds.binanceSecret,
      creds.krakenKey,
      creds.krakenSecret,
      creds.coinbaseKey,
      creds.coinbaseSecret,
      creds.coinbasePassphrase,
      creds.fbToken,
      creds.fbAppSecret,
    ],
    async close() {
      await client.close();
      await upstream.close();
    },
  };
}

/** The fields a secret for each test provider carries. */
export function fieldsFor(providerId: string, creds: UpstreamCredentials): Map<string, Buffer> {
  const b = (s: string): Buffer => Buffer.from(s, "utf8");
  switch (providerId) {
    case "up-header":
      return new Map([["key", b(creds.headerKey)]]);
    case "up-query":
    case "up-query-short":
      return new Map([["key", b(creds.queryKey)]]);
    case "up-basic":
      return new Map([
        ["username", b(creds.basicUser)],
        ["password", b(creds.basicPass)],
      ]);
    case "up-binance":
      return new Map([
        ["api_key", b(creds.binanceKey)],
        ["api_secret", b(creds.binanceSecret)],
      ]);
    case "up-kraken":
    case "up-kraken-patient":
      return new Map([
        ["api_key", b(creds.krakenKey)],
        ["api_secret", b(creds.krakenSecret)],
      ]);
    case "up-coinbase":
      return new Map([
        ["api_key", b(creds.coinbaseKey)],
        ["api_secret", b(creds.coinbaseSecret)],
        ["passphrase", b(creds.coinbasePassphrase)],
      ]);
    case "up-facebook":
      return new Map([
        ["access_token", b(creds.fbToken)],
        ["app_secret", b(creds.fbAppSecret)],
      ]);
    default:
      return new Map([["token", b(creds.bearer)]]);
  }
}

/** A request builder with harmless defaults. */
export function request(
  creds: UpstreamCredentials,
  providerId: string,
  overrides: Partial<OutboundRequest> = {},
): OutboundRequest {
  return {
    providerId,
    secretId: `secret-${providerId}`,
    fields: fieldsFor(providerId, creds),
    method: "GET",
    path: "/ok",
    query: [],
    headers: [],
    body: new Uint8Array(),
    ...overrides,
  };
}

/** All the encodings of a value a leak check looks for. */
export function encodings(value: string): string[] {
  const b = Buffer.from(value);
  return [value, b.toString("base64"), b.toString("base64url"), b.toString("hex"), encodeURIComponent(value)];
}

export async function readAll(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(c);
  return Buffer.concat(parts);
}

/** Awaits a promise that must reject and returns what it rejected with. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error("expected the promise to reject");
}
