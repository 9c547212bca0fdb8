import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { createCallerKeyAdmin } from "../../src/admin/caller-key-admin.js";
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { openDatabase } from "../../src/store/database.js";
import {
  canaryCredentials,
  type HttpsUpstream,
  startHttpsUpstream,
  type UpstreamCredentials,
} from "../../test/support/https-upstream.js";
import { type LocalKmsServer, startLocalKmsServer } from "../../test/support/local-kms-server.js";
import { bearerUpstreamProvider } from "../../test/support/loopback-providers.js";
import { startTestIssuer, type TestIssuer } from "../../test/support/test-issuer.js";
import { createThrowawayDatabase } from "../../test/support/throwaway-database.js";

const ROOT = new URL("../..", import.meta.url).pathname;

/** A `keybroker serve` child process with its dependencies (KMS, issuer, upstream) in this process. */
export interface BrokerProcess {
  readonly pid: number;
  readonly grpcAddress: string;
  readonly connectUrl: string;
  /** The ops server's /metrics (one endpoint for all workers). */
  readonly metricsUrl: string;
  readonly callerKey: string;
  readonly issuer: TestIssuer;
  readonly kms: LocalKmsServer;
  readonly upstream: HttpsUpstream;
  readonly upstreamCredentials: UpstreamCredentials;
  /** Transactions committed in the broker's database so far (Postgres only, else undefined). */
  committedTransactions(): Promise<number | undefined>;
  /** Another `serve` process on the same database, KMS and issuer, with cold caches (Postgres only). */
  startReplica(): Promise<ServeProcess>;
  stop(): Promise<void>;
}

export interface BrokerProcessOptions {
  readonly database: "postgres" | "pglite";
  readonly kmsLatencyMs?: number;
  readonly env?: Record<string, string>;
  /** Writes a V8 CPU profile of the broker into this directory when it exits. */
  readonly cpuProfileDir?: string;
  /** Pins the broker (all its threads) to this CPU with taskset, away from the load generator. */
  readonly cpu?: number;
  /** Another build's dist/ directory to run instead of this checkout's (A/B comparisons). */
  readonly dist?: string;
  /** `serve --workers N`; default 1 (one process, as every section but "workers" measures). */
  readonly workers?: number;
}

const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export async function startBrokerProcess(options: BrokerProcessOptions): Promise<BrokerProcess> {
  const dir = await mkdtemp(join(tmpdir(), "keybroker-bench-"));
  const kms = await startLocalKmsServer(
    options.kmsLatencyMs === undefined ? {} : { latencyMs: options.kmsLatencyMs },
  );
  const keyArn = kms.createKey("bench");
  const issuer = await startTestIssuer();
  const upstreamCredentials = canaryCredentials();
  const upstream = await startHttpsUpstream(upstreamCredentials);
  const providersFile = join(dir, "providers.json");
  await writeFile(
    providersFile,
    JSON.stringify({ providers: [bearerUpstreamProvider("bench-upstream", upstream.port, 10_000)] }),
  );
  const caFile = join(dir, "ca.pem");
  await writeFile(caFile, upstream.ca);

  let databaseEnv: Record<string, string>;
  let dropDatabase = async () => {};
  let committedTransactions = async (): Promise<number | undefined> => undefined;
  if (options.database === "postgres") {
    const throwaway = await createThrowawayDatabase(ADMIN_URL, "keybroker_bench");
    databaseEnv = { DATABASE_URL: throwaway.url };
    committedTransactions = async () => {
      const c = new pg.Client({ connectionString: ADMIN_URL });
      await c.connect();
      try {
        // Backends publish their counters at most once a second (PostgreSQL 15 shared-memory stats),
        // and a backend that goes idle within that second defers its flush by up to 10 s
        // (PGSTAT_IDLE_INTERVAL): short interleaved runs can carry part of the previous scenario's
        // count. A scenario measured alone (bench/tools/profile-hot-path.ts) is exact.
        await new Promise((resolve) => setTimeout(resolve, 1100));
        const { rows } = await c.query<{ n: string }>(
          "select xact_commit::text as n from pg_stat_database where datname = $1",
          [throwaway.name],
        );
        return Number(rows[0]?.n ?? Number.NaN);
      } finally {
        await c.end();
      }
    };
    dropDatabase = () => throwaway.drop();
  } else {
    databaseEnv = { KEYBROKER_PGLITE_DIR: join(dir, "pgdata"), KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1" };
  }

  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    // `serve` applies production rules; the bench stack's loopback issuer and providers are
    // allowed by name (L7).
    KEYBROKER_ALLOW_HTTP_ISSUER: "1",
    KEYBROKER_ALLOW_LOOPBACK_PROVIDERS: "1",
    // The scenarios drive ONE user's secret at up to c=64, the very load shape the per-secret
    // bound (L8, default 8) exists to queue. The bench measures the call path, not that queue,
    // so it lifts the bound; the queued cost is measured and reported separately (issue 12 note).
    KEYBROKER_MAX_CONCURRENT_CALLS_PER_SECRET: "256",
    LOG_LEVEL: "info",
    KEYBROKER_GRPC_HOST: "127.0.0.1",
    KEYBROKER_GRPC_PORT: "0",
    KEYBROKER_CONNECT_PORT: "0",
    KEYBROKER_ADMIN_GRPC_PORT: "off",
    KEYBROKER_METRICS_PORT: "0",
    KEYBROKER_KEYRING: "aws-kms",
    KEYBROKER_KMS_KEY_ID: keyArn,
    KEYBROKER_KMS_ENDPOINT: kms.endpoint,
    AWS_REGION: kms.region,
    AWS_ACCESS_KEY_ID: "bench",
    AWS_SECRET_ACCESS_KEY: "bench",
    AUTH0_ISSUER: issuer.issuer,
    AUTH0_AUDIENCE: issuer.audience,
    AUTH0_REQUIRED_PERMISSION: issuer.permission,
    KEYBROKER_PROVIDERS_FILE: providersFile,
    KEYBROKER_OUTBOUND_CA_FILE: caFile,
    ...databaseEnv,
    ...options.env,
  };

  // Migrate and mint the caller key before the broker owns the database (PGlite is single-process).
  const db = await openDatabase(
    options.database === "postgres"
      ? {
          kind: "postgres",
          url: new Redacted(env.DATABASE_URL ?? ""),
          maxConnections: 2,
          connectTimeoutMs: 5000,
          statementTimeoutMs: 30000,
        }
      : { kind: "pglite", dataDir: env.KEYBROKER_PGLITE_DIR },
    createLogger({ level: "silent" }),
  );
  const { migrateToLatest } = await import("../../src/store/migrate.js");
  await migrateToLatest(db.db);
  const created = await createCallerKeyAdmin({ db: db.db }).create({
    name: "bench",
    scopes: ["secrets:read", "secrets:write", "proxy:call"],
    expiresAt: null,
  });
  await db.close();

  const first = await spawnServe(env, options);
  const replicas: ServeProcess[] = [];
  return {
    pid: first.pid,
    grpcAddress: first.grpcAddress,
    connectUrl: first.connectUrl,
    metricsUrl: first.metricsUrl,
    callerKey: created.key,
    issuer,
    kms,
    upstream,
    upstreamCredentials,
    committedTransactions,
    async startReplica() {
      if (options.database !== "postgres") throw new Error("replicas need Postgres (PGlite is one process)");
      const { cpuProfileDir: _notProfiled, ...replicaOptions } = options;
      const replica = await spawnServe(env, replicaOptions);
      replicas.push(replica);
      return replica;
    },
    async stop() {
      await Promise.all([first, ...replicas].map((p) => p.stop()));
      await Promise.all([kms.close(), issuer.close(), upstream.close()]);
      await dropDatabase();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** One `keybroker serve` process. */
export interface ServeProcess {
  readonly pid: number;
  readonly grpcAddress: string;
  readonly connectUrl: string;
  readonly metricsUrl: string;
  /** SIGTERM, then waits for the exit (the broker drains and flushes its audit trail first). */
  stop(): Promise<void>;
}

async function spawnServe(
  env: Record<string, string>,
  options: Pick<BrokerProcessOptions, "cpuProfileDir" | "dist" | "cpu" | "workers">,
): Promise<ServeProcess> {
  // A V8 CPU profile of the broker (open it in Chrome DevTools or bench/tools/profile-summary.ts).
  const profileDir = options.cpuProfileDir ?? process.env.BENCH_CPU_PROF;
  const profile = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
  // The compiled broker when `npm run build` has run (as in the image), else the sources via tsx.
  const compiled = join(options.dist ?? join(ROOT, "dist"), "src/cli/main.js");
  const entry = existsSync(compiled) ? [compiled] : ["--import", "tsx", join(ROOT, "src/cli/main.ts")];
  const command = [
    process.execPath,
    ...profile,
    ...entry,
    "serve",
    "--workers",
    String(options.workers ?? 1),
  ];
  const pinned = options.cpu === undefined ? command : ["taskset", "-c", String(options.cpu), ...command];
  const child = spawn(pinned[0] as string, pinned.slice(1), { env, stdio: ["ignore", "pipe", "pipe"] });
  const ports = await waitForPorts(child);
  let exited: Promise<unknown> | undefined;
  return {
    pid: child.pid ?? 0,
    grpcAddress: `127.0.0.1:${ports.grpc}`,
    connectUrl: `http://127.0.0.1:${ports.connect}`,
    metricsUrl: `http://127.0.0.1:${ports.ops}/metrics`,
    stop() {
      exited ??= new Promise((resolve) => {
        if (child.exitCode !== null) resolve(child.exitCode);
        child.once("exit", resolve);
        child.kill("SIGTERM");
      });
      return exited.then(() => undefined);
    },
  };
}

async function waitForPorts(child: ChildProcess): Promise<{ grpc: number; connect: number; ops: number }> {
  let out = "";
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`broker did not start:\n${out}`)), 60_000);
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      // The broker logs its bound ports once at start-up (LOG_LEVEL=info; nothing per call).
      const match = /"grpcPort":(\d+),"connectPort":(\d+)[^}\n]*"opsPort":(\d+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ grpc: Number(match[1]), connect: Number(match[2]), ops: Number(match[3]) });
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`broker exited with ${code}:\n${out}`));
    });
  });
}
