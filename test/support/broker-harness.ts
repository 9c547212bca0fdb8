import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { JWTPayload } from "jose";
import { createCallerKeyAdmin } from "../../src/admin/caller-key-admin.js";
import { type App, createApp } from "../../src/app/create-app.js";
import type { CallerScope } from "../../src/auth/identity.js";
import { loadConfig } from "../../src/config/config.js";
import { Redacted } from "../../src/log/redacted.js";
import { openDatabase } from "../../src/store/database.js";
import { type CapturedLogs, captureLogs } from "./captured-logs.js";
import { createGrpcClients, type GrpcClients } from "./grpc-client.js";
import {
  canaryCredentials,
  type HttpsUpstream,
  startHttpsUpstream,
  type UpstreamCredentials,
} from "./https-upstream.js";
import { type LocalKmsServer, startLocalKmsServer } from "./local-kms-server.js";
import { bearerUpstreamProvider, loopbackProvider } from "./loopback-providers.js";
import { createTestDatabase, type TestDatabase, type TestDatabaseKind } from "./test-database.js";
import { startTestIssuer, type TestIssuer } from "./test-issuer.js";

/**
 * The harness broker's unknown-kid refetch cooldown. Within it, an unknown kid was never checked
 * against the issuer and is UNAVAILABLE (retry), after it UNAUTHENTICATED (A5): a test that wants
 * the definite refusal waits this long after any other unknown-kid token.
 */
export const HARNESS_JWKS_COOLDOWN_MS = 1000;

/** The whole broker, started as `keybroker serve` would, on loopback with real dependencies. */
export interface BrokerHarness {
  readonly app: App;
  readonly grpcAddress: string;
  /** AdminService's own listener (L6); `clients.admin` dials it. */
  readonly adminAddress: string;
  readonly connectUrl: string;
  /** Metrics and probes: http://127.0.0.1:PORT/{metrics,livez,readyz}. */
  readonly opsUrl: string;
  readonly database: TestDatabase;
  readonly issuer: TestIssuer;
  readonly kms: LocalKmsServer;
  readonly logs: CapturedLogs;
  /** A real HTTPS upstream (throwaway CA) behind the loopback test providers. */
  readonly upstream: HttpsUpstream;
  readonly upstreamCredentials: UpstreamCredentials;
  readonly clients: GrpcClients;
  /** Creates a caller key with these scopes; returns the key (shown once). */
  callerKey(
    scopes: readonly CallerScope[],
    options?: { expiresAt?: Date },
  ): Promise<{ key: string; id: string }>;
  revokeCallerKey(id: string): Promise<void>;
  /** A valid user access token for `sub` (claims may override anything). */
  tokenFor(sub: string, claims?: Partial<JWTPayload>): Promise<string>;
  /**
   * Another replica: a second broker on the same database (on Postgres through its own pool and
   * LISTEN connection, as a second process would have), issuer and KMS. Closed by `close()` too.
   */
  replica(): Promise<BrokerReplica>;
  close(): Promise<void>;
}

/** A second broker serving the same data. */
export interface BrokerReplica {
  readonly app: App;
  readonly grpcAddress: string;
  readonly connectUrl: string;
  readonly clients: GrpcClients;
  close(): Promise<void>;
}

/** What a test may hand the broker besides its environment. */
export interface BrokerOptions {
  /** With OTEL_TRACES_EXPORTER=otlp in `env`: spans go here (the SDK's InMemorySpanExporter). */
  readonly spanExporter?: SpanExporter;
}

export async function startBroker(
  kind: TestDatabaseKind,
  env: Readonly<Record<string, string>> = {},
  options: BrokerOptions = {},
): Promise<BrokerHarness> {
  const database = await createTestDatabase(kind);
  const issuer = await startTestIssuer();
  const kms = await startLocalKmsServer();
  const keyArn = kms.createKey("keybroker test master key");
  kms.createAlias("alias/keybroker", keyArn);
  // For brokers that sign audit checkpoints (env KEYBROKER_AUDIT_CHECKPOINT_KEY_ID=alias/keybroker-audit).
  kms.createAlias("alias/keybroker-audit", kms.createKey("keybroker test audit checkpoints", "HMAC_256"));
  // The real SDK's default credential chain reads these: the local KMS server only checks SigV4 is present.
  process.env.AWS_ACCESS_KEY_ID = "test";
  process.env.AWS_SECRET_ACCESS_KEY = "test";
  const logs = captureLogs();
  const upstreamCredentials = canaryCredentials();
  const upstream = await startHttpsUpstream(upstreamCredentials);
  const dir = await mkdtemp(join(tmpdir(), "keybroker-harness-"));
  const providersFile = join(dir, "providers.json");
  const caFile = join(dir, "upstream-ca.pem");
  await writeFile(providersFile, JSON.stringify(testProviders(upstream.port, await closedPort())));
  await writeFile(caFile, upstream.ca);
  const baseEnv = {
    // Production rules, with only the relaxations this harness needs, each named (L7): the test
    // issuer is plain http on loopback, the test providers are loopback, and the database is
    // passed in below (the config's own database is never opened).
    KEYBROKER_ALLOW_HTTP_ISSUER: "1",
    KEYBROKER_ALLOW_LOOPBACK_PROVIDERS: "1",
    KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
    // The event-loop monitor process metrics start cannot be stopped: off for in-process brokers.
    KEYBROKER_PROCESS_METRICS: "off",
    LOG_LEVEL: "debug",
    KEYBROKER_GRPC_HOST: "127.0.0.1",
    KEYBROKER_GRPC_PORT: "0",
    KEYBROKER_CONNECT_PORT: "0",
    KEYBROKER_ADMIN_GRPC_PORT: "0",
    KEYBROKER_METRICS_PORT: "0",
    KEYBROKER_KEYRING: "aws-kms",
    KEYBROKER_KMS_KEY_ID: "alias/keybroker",
    KEYBROKER_KMS_ENDPOINT: kms.endpoint,
    KEYBROKER_KMS_MAX_ATTEMPTS: "2",
    AWS_REGION: kms.region,
    AUTH0_ISSUER: issuer.issuer,
    AUTH0_AUDIENCE: issuer.audience,
    AUTH0_REQUIRED_PERMISSION: issuer.permission,
    KEYBROKER_JWKS_COOLDOWN_MS: String(HARNESS_JWKS_COOLDOWN_MS),
    KEYBROKER_SHUTDOWN_GRACE_MS: "2000",
    KEYBROKER_PROVIDERS_FILE: providersFile,
    KEYBROKER_OUTBOUND_CA_FILE: caFile,
    ...env,
  };
  const config = loadConfig(baseEnv);
  const app = await createApp(config, logs.logger, {
    migrate: false,
    overrides: {
      database,
      ...(options.spanExporter === undefined ? {} : { spanExporter: options.spanExporter }),
    },
  });
  const { grpcPort, connectPort, adminPort, opsPort } = await app.start();
  const grpcAddress = `127.0.0.1:${grpcPort}`;
  const adminAddress = `127.0.0.1:${adminPort}`;
  const clients = createGrpcClients(grpcAddress, adminAddress);
  const admin = createCallerKeyAdmin({ db: database.db });
  let closed = false;
  const replicas: BrokerReplica[] = [];

  async function replica(): Promise<BrokerReplica> {
    const shared =
      database.url === undefined
        ? // PGlite is one process's database: the replica shares the instance (and its LISTEN).
          { ...database, close: async () => undefined }
        : await openDatabase(
            {
              kind: "postgres",
              url: new Redacted(database.url),
              maxConnections: 5,
              connectTimeoutMs: 5_000,
              statementTimeoutMs: 30_000,
            },
            logs.logger,
          );
    const replicaApp = await createApp(loadConfig(baseEnv), logs.logger, {
      migrate: false,
      overrides: { database: shared },
    });
    const ports = await replicaApp.start();
    const replicaClients = createGrpcClients(`127.0.0.1:${ports.grpcPort}`);
    const started: BrokerReplica = {
      app: replicaApp,
      grpcAddress: `127.0.0.1:${ports.grpcPort}`,
      connectUrl: `http://127.0.0.1:${ports.connectPort}`,
      clients: replicaClients,
      async close() {
        replicaClients.close();
        await replicaApp.stop();
        await shared.close();
      },
    };
    replicas.push(started);
    return started;
  }

  return {
    app,
    grpcAddress,
    adminAddress,
    connectUrl: `http://127.0.0.1:${connectPort}`,
    opsUrl: `http://127.0.0.1:${opsPort}`,
    database,
    issuer,
    kms,
    logs,
    upstream,
    upstreamCredentials,
    clients,
    async callerKey(scopes, options = {}) {
      const created = await admin.create({
        name: `test ${scopes.join(" ")}`.replaceAll(":", "-"),
        scopes,
        expiresAt: options.expiresAt ?? null,
      });
      return { key: created.key, id: created.summary.id };
    },
    revokeCallerKey: (id) => admin.revoke(id),
    tokenFor: (sub, claims = {}) => issuer.sign({ sub, ...claims }),
    replica,
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(replicas.map((r) => r.close()));
      clients.close();
      await app.stop();
      await Promise.all([issuer.close(), kms.close(), upstream.close()]);
      await rm(dir, { recursive: true, force: true });
      await database.close();
    },
  };
}

const SHIPPED = JSON.parse(
  readFileSync(new URL("../../providers/providers.json", import.meta.url), "utf8"),
) as {
  providers: Array<{
    id: string;
    auth: unknown;
    operations: unknown;
    defaultGrant: string[];
    inspection?: unknown;
    redactResponseFields?: unknown;
  }>;
};

/** A loopback port nothing listens on (bound, then released), for an unreachable provider. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * The shipped providers plus loopback ones pointing at the test upstream. `test-binance`
 * reuses the SHIPPED Binance signing recipe, so the upstream's Binance-style verifier checks
 * the real definition, and its shipped operation classes and default grant (so a withdrawal is a
 * `transfer` here as in production). Loopback is allowed only by KEYBROKER_ALLOW_LOOPBACK_PROVIDERS=1.
 */
function testProviders(port: number, deadPort: number): unknown {
  const binance = SHIPPED.providers.find((p) => p.id === "binance");
  const graph = SHIPPED.providers.find((p) => p.id === "facebook-graph");
  // Binance-style upstreams with the SHIPPED inspection recipe (issue 13 item 5): one the
  // harness's tests may relax, one nothing listens on.
  const inspected = (id: string, onPort: number) => ({
    ...(loopbackProvider({
      id,
      port: onPort,
      path: "/binance",
      requiredFields: ["api_key", "api_secret"],
      auth: binance?.auth,
    }) as object),
    inspection: binance?.inspection,
  });
  return {
    providers: [
      ...SHIPPED.providers,
      bearerUpstreamProvider("test-upstream", port),
      loopbackProvider({
        id: "test-binance",
        port,
        path: "/binance",
        requiredFields: ["api_key", "api_secret"],
        auth: binance?.auth,
        operations: binance?.operations,
        ...(binance === undefined ? {} : { defaultGrant: binance.defaultGrant }),
      }),
      inspected("test-binance-inspected", port),
      inspected("test-binance-relaxed", port),
      inspected("test-binance-down", deadPort),
      {
        ...(loopbackProvider({
          id: "test-graph",
          port,
          path: "/facebook",
          requiredFields: ["access_token", "app_secret"],
          auth: graph?.auth,
        }) as object),
        redactResponseFields: graph?.redactResponseFields,
      },
    ],
  };
}
