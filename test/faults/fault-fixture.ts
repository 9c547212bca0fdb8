import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import {
  type Client,
  credentials,
  makeClientConstructor,
  type ServiceDefinition,
  status,
} from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { createCallerKeyAdmin } from "../../src/admin/caller-key-admin.js";
import { type App, createApp } from "../../src/app/create-app.js";
import type { CallerScope } from "../../src/auth/identity.js";
import { loadConfig } from "../../src/config/config.js";
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { openDatabase } from "../../src/store/database.js";
import { migrateToLatest } from "../../src/store/migrate.js";
import { type CapturedLogs, captureLogs } from "../support/captured-logs.js";
import {
  asServiceError,
  createGrpcClients,
  type GrpcCallOptions,
  type GrpcClients,
  type UnaryResult,
  unary,
  type WireMessage,
} from "../support/grpc-client.js";
import {
  canaryCredentials,
  type HttpsUpstream,
  startHttpsUpstream,
  type UpstreamCredentials,
} from "../support/https-upstream.js";
import { type LocalKmsServer, startLocalKmsServer } from "../support/local-kms-server.js";
import { bearerUpstreamProvider } from "../support/loopback-providers.js";
import { startTestIssuer, type TestIssuer } from "../support/test-issuer.js";

/**
 * Pieces the fault suites share: the broker's real dependencies (issuer, KMS, HTTPS upstream),
 * a broker on a Postgres URL (in this process, or as a `keybroker serve` child process), and
 * a way to turn any call into "which status, how fast" without throwing.
 */

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
export const ALL_SCOPES: readonly CallerScope[] = ["secrets:read", "secrets:write", "proxy:call"];

/** How one call ended: gRPC status (0 = OK), its details, and how long it took. */
export interface CallOutcome {
  readonly code: status;
  readonly details: string;
  readonly ms: number;
  readonly response: WireMessage | undefined;
}

/** Awaits a call and reports its status instead of throwing (non-gRPC rejections still throw). */
export async function outcomeOf(call: Promise<UnaryResult>): Promise<CallOutcome> {
  const started = performance.now();
  try {
    const { response } = await call;
    return { code: status.OK, details: "", ms: performance.now() - started, response };
  } catch (err) {
    const e = asServiceError(err);
    return { code: e.code, details: e.details, ms: performance.now() - started, response: undefined };
  }
}

export const codeName = (code: number): string => status[code] ?? String(code);

/** "OK: 12, UNAVAILABLE: 3": for assertion messages that say what happened. */
export function tally(outcomes: readonly CallOutcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) counts[codeName(o.code)] = (counts[codeName(o.code)] ?? 0) + 1;
  return counts;
}

/** Polls `probe` every `everyMs` until it returns true or `withinMs` passes; returns whether it did. */
export async function eventually(
  probe: () => Promise<boolean>,
  withinMs: number,
  everyMs = 100,
): Promise<boolean> {
  const until = Date.now() + withinMs;
  for (let i = 0; i < Math.ceil(withinMs / everyMs) + 1; i++) {
    if (await probe().catch(() => false)) return true;
    if (Date.now() >= until) return false;
    await delay(everyMs);
  }
  return false;
}

/** The broker's outside world: a JWKS issuer, the local KMS, an HTTPS upstream, provider files. */
export interface BrokerDependencies {
  readonly issuer: TestIssuer;
  readonly kms: LocalKmsServer;
  readonly keyArn: string;
  readonly upstream: HttpsUpstream;
  readonly upstreamCredentials: UpstreamCredentials;
  /** Every broker variable except the database ones. */
  readonly env: Readonly<Record<string, string>>;
  close(): Promise<void>;
}

export async function startBrokerDependencies(): Promise<BrokerDependencies> {
  const dir = await mkdtemp(join(tmpdir(), "keybroker-faults-"));
  const issuer = await startTestIssuer();
  const kms = await startLocalKmsServer();
  const keyArn = kms.createKey("keybroker fault-test master key");
  const upstreamCredentials = canaryCredentials();
  const upstream = await startHttpsUpstream(upstreamCredentials);
  const providersFile = join(dir, "providers.json");
  const caFile = join(dir, "upstream-ca.pem");
  await writeFile(
    providersFile,
    JSON.stringify({ providers: [bearerUpstreamProvider("test-upstream", upstream.port)] }),
  );
  await writeFile(caFile, upstream.ca);
  const env = {
    // Production rules except what the test stack needs, each named (L7).
    KEYBROKER_ALLOW_HTTP_ISSUER: "1",
    KEYBROKER_ALLOW_LOOPBACK_PROVIDERS: "1",
    LOG_LEVEL: "info",
    KEYBROKER_GRPC_HOST: "127.0.0.1",
    KEYBROKER_GRPC_PORT: "0",
    KEYBROKER_CONNECT_PORT: "off",
    KEYBROKER_ADMIN_GRPC_PORT: "off",
    KEYBROKER_METRICS_PORT: "0",
    KEYBROKER_KEYRING: "aws-kms",
    KEYBROKER_KMS_KEY_ID: keyArn,
    KEYBROKER_KMS_ENDPOINT: kms.endpoint,
    KEYBROKER_KMS_MAX_ATTEMPTS: "2",
    AWS_REGION: kms.region,
    AWS_ACCESS_KEY_ID: "test",
    AWS_SECRET_ACCESS_KEY: "test",
    AUTH0_ISSUER: issuer.issuer,
    AUTH0_AUDIENCE: issuer.audience,
    AUTH0_REQUIRED_PERMISSION: issuer.permission,
    KEYBROKER_JWKS_COOLDOWN_MS: "1000",
    KEYBROKER_PROVIDERS_FILE: providersFile,
    KEYBROKER_OUTBOUND_CA_FILE: caFile,
  };
  return {
    issuer,
    kms,
    keyArn,
    upstream,
    upstreamCredentials,
    env,
    async close() {
      await Promise.all([issuer.close(), kms.close(), upstream.close()]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Migrates the database at `url` and mints one caller key with every user scope. */
export async function prepareDatabase(url: string): Promise<{ callerKey: string }> {
  const handle = await openDatabase(
    {
      kind: "postgres",
      url: new Redacted(url),
      maxConnections: 2,
      connectTimeoutMs: 5_000,
      statementTimeoutMs: 30_000,
    },
    createLogger({ level: "silent" }),
  );
  try {
    await migrateToLatest(handle.db);
    const created = await createCallerKeyAdmin({ db: handle.db }).create({
      name: "fault tests",
      scopes: ALL_SCOPES,
      expiresAt: null,
    });
    return { callerKey: created.key };
  } finally {
    await handle.close();
  }
}

/** Calls as one user: the app's caller key plus that user's access token. */
export interface UserSession {
  put(label: string, options?: GrpcCallOptions): Promise<CallOutcome>;
  list(options?: GrpcCallOptions): Promise<CallOutcome>;
  call(secretId: string, method: string, path: string, options?: GrpcCallOptions): Promise<CallOutcome>;
}

/** `put` stores `secretValue` as the `test-upstream` bearer token. */
export function userSession(
  clients: GrpcClients,
  auth: { readonly callerKey: string; readonly token: string; readonly secretValue: string },
): UserSession {
  const withAuth = (options: GrpcCallOptions = {}): GrpcCallOptions => ({
    callerKey: auth.callerKey,
    bearerToken: auth.token,
    ...options,
  });
  return {
    put: (label, options) =>
      outcomeOf(
        unary(
          clients.secrets,
          "PutSecret",
          { provider: "test-upstream", label, fields: { token: auth.secretValue } },
          withAuth(options),
        ),
      ),
    list: (options) => outcomeOf(unary(clients.secrets, "ListSecrets", {}, withAuth(options))),
    call: (secretId, method, path, options) =>
      outcomeOf(unary(clients.proxy, "Call", { secretId, method, path }, withAuth(options))),
  };
}

/** The id in a PutSecret response. */
export function secretIdOf(outcome: CallOutcome): string {
  const secret = outcome.response?.secret as WireMessage | undefined;
  const id = secret?.id;
  if (typeof id !== "string") throw new Error(`PutSecret returned no id (${codeName(outcome.code)})`);
  return id;
}

/** The ids in a ListSecrets response. */
export function listedIds(outcome: CallOutcome): string[] {
  const secrets = (outcome.response?.secrets as WireMessage[] | undefined) ?? [];
  return secrets.map((s) => String(s.id));
}

/** The broker in this process, built by `createApp` from config exactly as `serve` does. */
export interface InProcessBroker {
  readonly app: App;
  readonly grpcAddress: string;
  readonly opsUrl: string;
  readonly clients: GrpcClients;
  readonly logs: CapturedLogs;
  readonly callerKey: string;
  session(sub: string): Promise<UserSession>;
  close(): Promise<void>;
}

export async function startInProcessBroker(
  deps: BrokerDependencies,
  databaseUrl: string,
  env: Readonly<Record<string, string>> = {},
): Promise<InProcessBroker> {
  const { callerKey } = await prepareDatabase(databaseUrl);
  // The SDK's default credential chain reads these; the local KMS only checks SigV4 is present.
  process.env.AWS_ACCESS_KEY_ID = "test";
  process.env.AWS_SECRET_ACCESS_KEY = "test";
  const logs = captureLogs();
  const config = loadConfig({
    ...deps.env,
    LOG_LEVEL: "debug",
    // The event-loop monitor process metrics start cannot be stopped: off in process.
    KEYBROKER_PROCESS_METRICS: "off",
    DATABASE_URL: databaseUrl,
    ...env,
  });
  const app = await createApp(config, logs.logger, { migrate: false });
  const { grpcPort, opsPort } = await app.start();
  const grpcAddress = `127.0.0.1:${grpcPort}`;
  const clients = createGrpcClients(grpcAddress);
  let closed = false;
  return {
    app,
    grpcAddress,
    opsUrl: `http://127.0.0.1:${opsPort}`,
    clients,
    logs,
    callerKey,
    async session(sub) {
      const token = await deps.issuer.sign({ sub });
      return userSession(clients, { callerKey, token, secretValue: deps.upstreamCredentials.bearer });
    },
    async close() {
      if (closed) return;
      closed = true;
      clients.close();
      await app.stop();
    },
  };
}

/** `keybroker serve` as a child process (from the sources under test, via tsx). */
export interface BrokerChild {
  readonly pid: number;
  readonly grpcAddress: string;
  readonly opsUrl: string;
  readonly callerKey: string;
  /** Resolves when the process exits. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  kill(signal: NodeJS.Signals): void;
  /** SIGKILLs the process if it is still running. */
  close(): Promise<void>;
}

export async function spawnBroker(
  deps: BrokerDependencies,
  databaseUrl: string,
  env: Readonly<Record<string, string>> = {},
  // One process unless a test asks for more (`serve` defaults to every core).
  serveArgs: readonly string[] = ["--workers", "1"],
): Promise<BrokerChild> {
  const { callerKey } = await prepareDatabase(databaseUrl);
  const child = spawn(
    process.execPath,
    ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "serve", ...serveArgs],
    {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? "", TZ: "UTC", ...deps.env, DATABASE_URL: databaseUrl, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let out = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    out += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => resolve({ code, signal }));
  });
  // Several workers compile and start at once: on a busy machine that takes longer than one.
  const workers = Number(serveArgs[serveArgs.indexOf("--workers") + 1] ?? 1);
  const ports = await waitForPorts(child, () => out, exited, workers > 1 ? 180_000 : 60_000);
  return {
    pid: child.pid ?? 0,
    grpcAddress: `127.0.0.1:${ports.grpc}`,
    opsUrl: `http://127.0.0.1:${ports.ops}`,
    callerKey,
    exited,
    output: () => out,
    kill: (signal) => {
      child.kill(signal);
    },
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        await exited;
      }
    },
  };
}

async function waitForPorts(
  child: ChildProcess,
  output: () => string,
  exited: Promise<{ code: number | null }>,
  withinMs = 60_000,
): Promise<{ grpc: number; ops: number }> {
  const started = Date.now();
  let exit: { code: number | null } | undefined;
  void exited.then((e) => {
    exit = e;
  });
  // tsx compiles the sources on start-up: seconds on a busy 2-core machine.
  while (Date.now() - started < withinMs) {
    // The broker logs its bound ports once at start-up.
    const grpc = /"grpcPort":(\d+)/.exec(output());
    const ops = /"opsPort":(\d+)/.exec(output());
    if (grpc && ops) return { grpc: Number(grpc[1]), ops: Number(ops[1]) };
    if (exit !== undefined) throw new Error(`broker exited with ${exit.code} before serving:\n${output()}`);
    await delay(50);
  }
  child.kill("SIGKILL");
  throw new Error(`broker did not start within ${withinMs / 1000} s:\n${output()}`);
}

const HealthClient = makeClientConstructor(healthService as unknown as ServiceDefinition, "Health");

/** A grpc.health.v1 client for `address`; close() it. */
export function healthClient(address: string): Client {
  return new HealthClient(address, credentials.createInsecure());
}

/** Calls issued in the background until stopped. */
export interface BackgroundLoad {
  /** Stops issuing calls and waits for those in flight; returns every outcome. Idempotent. */
  stop(): Promise<CallOutcome[]>;
}

/**
 * `workers` loops issuing `call` until stopped, until `alsoStopWhen()` says so, or until each
 * has made `maxCallsPerWorker` calls: bounded whatever happens.
 */
export function startLoad(
  workers: number,
  maxCallsPerWorker: number,
  call: (worker: number, index: number) => Promise<CallOutcome>,
  alsoStopWhen: () => boolean = () => false,
): BackgroundLoad {
  let stopped = false;
  const outcomes: CallOutcome[] = [];
  const done = Promise.all(
    Array.from({ length: workers }, async (_, worker) => {
      for (let i = 0; i < maxCallsPerWorker && !stopped && !alsoStopWhen(); i++) {
        outcomes.push(await call(worker, i));
      }
    }),
  ).then(() => outcomes);
  return {
    stop() {
      stopped = true;
      return done;
    },
  };
}
