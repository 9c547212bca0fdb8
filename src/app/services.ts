import { readFile } from "node:fs/promises";
import type { AuditedRunner } from "../audit/audited-operation.js";
import type { Config } from "../config/config.js";
import { BrokerError } from "../errors.js";
import type { Logger } from "../log/logger.js";
import { createConnectionRefresher } from "../oauth/connection-refresher.js";
import { createOAuthAppStore, type OAuthAppStore } from "../oauth/oauth-app-store.js";
import { createSecretDeleter, type SecretDeleter } from "../oauth/secret-deleter.js";
import { createTokenEndpointClient, type TokenEndpointClient } from "../oauth/token-endpoint-client.js";
import type { Metrics } from "../observability/metrics.js";
import { tracedOutboundClient } from "../observability/traced-parts.js";
import type { Tracing } from "../observability/tracing.js";
import type { Resolver } from "../outbound/guarded-connector.js";
import { createOutboundClient } from "../outbound/outbound-client.js";
import {
  largestRequestBodyBytes,
  loadProviderRegistry,
  type ProviderRegistry,
} from "../outbound/provider-registry.js";
import { createOperationPolicy } from "../policy/operation-policy.js";
import { createCallRateLimiter } from "../proxy/call-rate-limiter.js";
import { createConcurrencyLimit } from "../proxy/concurrency-limit.js";
import { createProxyService, type ProxyService } from "../proxy/proxy-service.js";
import { createRateLimitPolicy } from "../proxy/rate-limit-policy.js";
import { createKeyInspector } from "../secrets/key-inspector.js";
import { createSecretService, type SecretService } from "../secrets/secret-service.js";
import { createUsageRecorder } from "../secrets/usage-recorder.js";
import type { DatabaseHandle } from "../store/database.js";
import { withNextOutboundNonce } from "../store/outbound-nonces.repository.js";
import { deleteRateLimitLeasesBefore, leaseRateLimitTokens } from "../store/rate-limit-leases.repository.js";
import { markSecretUsed } from "../store/secrets.repository.js";
import type { Keys } from "./keys.js";
import type { Lifecycle } from "./lifecycle.js";

export interface ServicesDeps {
  readonly config: Pick<
    Config,
    "providersFile" | "relaxations" | "outboundCaFile" | "proxyConcurrency" | "rateLimitDefaults"
  > &
    Partial<Pick<Config, "inspectionRelaxed">>;
  readonly database: DatabaseHandle;
  readonly keys: Pick<Keys, "userDataKeys" | "fingerprintKey" | "keyring">;
  /** Refreshes and revocations of OAuth connections are audited like the calls that cause them. */
  readonly audited: AuditedRunner;
  readonly metrics: Pick<Metrics, "upstreamCall"> & Partial<Pick<Metrics, "keyInspected">>;
  readonly logger: Logger;
  /** DNS for the egress guard (tests resolve fake hostnames to loopback). */
  readonly resolve?: Resolver | undefined;
  /** When tracing is on: every provider call inside a span. */
  readonly tracing?: Tracing | undefined;
}

export interface Services {
  readonly secrets: SecretService;
  readonly proxy: ProxyService;
  /** The largest request body a provider accepts: the RPC receive cap derives from it (F3). */
  readonly largestRequestBodyBytes: number;
  /** The validated provider registry (the OAuth flows read providers' `oauth` settings). */
  readonly registry: ProviderRegistry;
  /** DeleteSecret: an OAuth connection is revoked at its provider first (issue 15 item 5). */
  readonly deleter: SecretDeleter;
  /** The broker's OAuth apps and the providers' token endpoints (issue 15). */
  readonly oauth: { readonly apps: OAuthAppStore; readonly tokens: TokenEndpointClient };
}

/** The domain services behind the RPCs: the secret store and the outbound proxy. */
export async function createServices(lifecycle: Lifecycle, deps: ServicesDeps): Promise<Services> {
  const { config, database, keys, metrics, logger, resolve, audited } = deps;
  // The registry's production checks stay on unless loopback providers were explicitly allowed (L7).
  const registry = await loadProviderRegistry(config.providersFile, {
    production: !config.relaxations.includes("loopback_providers"),
  });
  // A relaxation naming a provider the registry lacks is a typo that would silently relax nothing.
  const relaxed = config.inspectionRelaxed ?? [];
  const unknown = relaxed.filter((id) => registry.get(id) === undefined);
  if (unknown.length > 0) {
    throw new BrokerError(
      "failed_precondition",
      `KEYBROKER_INSPECTION_RELAX names providers the registry does not have: ${unknown.join(", ")}`,
    );
  }
  const ca = config.outboundCaFile === undefined ? undefined : await readFile(config.outboundCaFile);
  // Replicas share a Postgres: the nonce counter and send order live there (F1). PGlite is one
  // process, which orders its own nonces without holding its single connection over the network.
  const sharedNonces =
    database.kind === "postgres"
      ? {
          withNext: <T>(id: string, floor: number, maxWaitMs: number, send: (nonce: number) => Promise<T>) =>
            withNextOutboundNonce(database.db, id, floor, maxWaitMs, send),
        }
      : undefined;
  const client = createOutboundClient({
    registry,
    logger,
    sharedNonces,
    onUpstreamCall: (e) => metrics.upstreamCall(e),
    ...(resolve === undefined ? {} : { resolve }),
    ...(ca === undefined ? {} : { ca }),
  });
  lifecycle.defer("outbound client", () => client.close());
  const outbound = deps.tracing === undefined ? client : tracedOutboundClient(client, deps.tracing);
  const secrets = createSecretService({
    db: database.db,
    prepared: database.prepared,
    userDataKeys: keys.userDataKeys,
    fingerprintKey: keys.fingerprintKey,
    providers: {
      requiredFields: (id) => registry.get(id)?.definition.requiredFields,
      defaultGrant: (id) => registry.get(id)?.definition.defaultGrant,
      isOAuth: (id) => registry.get(id)?.definition.oauth !== undefined,
    },
    inspector: createKeyInspector({ registry, outbound, relaxed: new Set(relaxed), logger }),
    onInspected: (provider, verdict) => metrics.keyInspected?.(provider, verdict),
  });
  const markUsed = createUsageRecorder({ record: (id, at) => markSecretUsed(database.db, id, at), logger });
  const limits = {
    perSecret: createConcurrencyLimit({
      max: config.proxyConcurrency.perSecret,
      maxQueued: config.proxyConcurrency.perSecretQueued,
      what: "with this secret",
    }),
    perCaller: createConcurrencyLimit({
      max: config.proxyConcurrency.perCaller,
      maxQueued: config.proxyConcurrency.perCaller,
      what: "by this caller key",
    }),
  };
  const operations = createOperationPolicy(registry);
  const perMinute = (n: number | undefined) => (n === undefined ? undefined : { perMinute: n });
  const rates = {
    policy: createRateLimitPolicy({
      limitsOf: (id) => registry.get(id)?.definition.rateLimits,
      defaults: {
        perSecret: perMinute(config.rateLimitDefaults.perSecretPerMinute),
        perCallerKey: perMinute(config.rateLimitDefaults.perCallerKeyPerMinute),
      },
    }),
    // The counters live in the database every replica shares (one upsert per leased block).
    limiter: createCallRateLimiter({
      store: {
        lease: (bucket, windowStart, block, limit) =>
          leaseRateLimitTokens(database.prepared, bucket, windowStart, block, limit),
        sweep: (before) => deleteRateLimitLeasesBefore(database.db, before),
      },
      logger,
    }),
  };
  // OAuth connections (issue 15): the token endpoints are reached through the same egress guard
  // and trusted CAs as calls; the apps' client secrets are sealed by the keyring.
  const tokens = createTokenEndpointClient({
    logger,
    ...(resolve === undefined ? {} : { resolve }),
    ...(ca === undefined ? {} : { ca }),
  });
  lifecycle.defer("token endpoint client", () => tokens.close());
  const apps = createOAuthAppStore({
    db: database.db,
    keyring: keys.keyring,
    isOAuthProvider: (id) => registry.get(id)?.definition.oauth !== undefined,
  });
  const connections = createConnectionRefresher({
    db: database.db,
    registry,
    apps,
    tokens,
    secrets,
    audited,
    logger,
  });
  return {
    secrets,
    proxy: createProxyService({ secrets, outbound, operations, markUsed, limits, rates, connections }),
    largestRequestBodyBytes: largestRequestBodyBytes(registry),
    registry,
    deleter: createSecretDeleter({ secrets, registry, apps, tokens, audited, logger }),
    oauth: { apps, tokens },
  };
}
