import { mkdir, readFile, writeFile } from "node:fs/promises";
import { createCallerKeyAdmin } from "../admin/caller-key-admin.js";
import { type App, createApp } from "../app/create-app.js";
import { loadOrCreateDevIssuerKey, startDevIssuer } from "../auth/dev-issuer.js";
import {
  type Config,
  ConfigError,
  loadConfig,
  relaxationWarnings,
  SHIPPED_PROVIDERS_FILE,
} from "../config/config.js";
import { BrokerError } from "../errors.js";
import { createLogger } from "../log/logger.js";
import { createPrettyDestination } from "../log/pretty-destination.js";
import { JSON_OPTION, parseCommandArgs } from "./cli-args.js";
import type { CliIo } from "./cli-io.js";
import type { CommandSpec } from "./command-spec.js";
import { type DataDirLock, lockDataDir } from "./data-dir-lock.js";
import { type DevEndpoints, devBanner, devCommands } from "./dev-banner.js";
import { devConfigEnv } from "./dev-config.js";
import { seedDevEchoSecret } from "./dev-echo-seed.js";
import { devEchoProvider, startDevEchoUpstream } from "./dev-echo-upstream.js";
import {
  DEV_AUDIENCE,
  DEV_PERMISSION,
  devDir,
  devPath,
  refuseProduction,
  writeDevState,
} from "./dev-environment.js";
import { stopOnSignals } from "./shutdown-signals.js";

const DEV_KEY_NAME = "dev";

const HELP =
  "Usage: keybroker dev [--json]\n\n" +
  "DEVELOPMENT ONLY (npm start). The broker with embedded defaults: PGlite and a local file keyring\n" +
  "in KEYBROKER_DEV_DIR (default .keybroker-dev/, locked against a second process), a loopback token\n" +
  'issuer (keybroker dev-token), and a loopback echo provider ("dev-echo") with a seeded secret, so\n' +
  "a ProxyService call works at once. Prints a fresh caller key and ready-to-paste calls.\n\n" +
  "Reads the environment as serve does (ports, KEYBROKER_METRICS_PORT, KEYBROKER_PROVIDERS_FILE,\n" +
  "KEYBROKER_OUTBOUND_CA_FILE, limits, LOG_LEVEL...), except what dev mode decides itself (database,\n" +
  "keyring, AUTH0_*: ignored with a warning). Listeners bind loopback only. Also:\n" +
  "  KEYBROKER_DEV_ISSUER_PORT  the token issuer's port (4455)\n" +
  "  KEYBROKER_DEV_ECHO_PORT    the echo upstream's port (any free one)\n" +
  "Logs are human-readable (serve logs JSON). Refuses NODE_ENV=production.\n\n" +
  "Options:\n" +
  "  --json            print the endpoints and commands as one JSON line instead of the banner (logs to stderr)\n" +
  "  -h, --help        this help\n";

export const devCommand: CommandSpec = {
  name: "dev",
  summary: "run the broker with embedded DEV-ONLY defaults (npm start)",
  help: HELP,
  subcommands: [],
  flags: ["--json"],
  run: runDev,
};

/** Teardowns of what dev mode started, newest first; a failed start runs them too (no hang). */
function createTeardown() {
  const steps: Array<() => Promise<void>> = [];
  return {
    add(step: () => Promise<void>) {
      steps.unshift(step);
    },
    async run() {
      for (const step of steps.splice(0)) await step().catch(() => {});
    },
  };
}

/**
 * `npm start`: the broker with embedded DEV-ONLY defaults — PGlite in .keybroker-dev/,
 * the local file keyring, and a loopback token issuer whose JWKS is served over HTTP so
 * the production jose code path runs unchanged. Refuses NODE_ENV=production.
 */
export async function runDev(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs(args, { ...JSON_OPTION });
  refuseProduction("keybroker dev", io.env);
  const json = values.json === true;
  await mkdir(devDir(io.env), { recursive: true, mode: 0o700 });
  // Before anything opens the directory: a second dev process stops here, not inside PGlite.
  const lock: DataDirLock = await lockDataDir(devPath(io.env, "pgdata"), "keybroker dev");
  const teardown = createTeardown();
  teardown.add(() => lock.release());
  const logger = createLogger({
    level: io.env.LOG_LEVEL ?? "info",
    destination: createPrettyDestination(json ? io.stderr : io.stdout),
  });
  try {
    const issuerKey = await loadOrCreateDevIssuerKey(devPath(io.env, "issuer-key.json"));
    const issuerPort = Number(io.env.KEYBROKER_DEV_ISSUER_PORT ?? 4455);
    const issuer = await listening("the dev token issuer", "KEYBROKER_DEV_ISSUER_PORT", () =>
      startDevIssuer({ host: "127.0.0.1", port: issuerPort, key: issuerKey }),
    );
    teardown.add(() => issuer.close());
    const echoPort = Number(io.env.KEYBROKER_DEV_ECHO_PORT ?? 0);
    const echo = await listening("the dev echo upstream", "KEYBROKER_DEV_ECHO_PORT", () =>
      startDevEchoUpstream(echoPort),
    );
    teardown.add(() => echo.close());

    const providersFile = await writeDevRegistry(io.env, echo.port);
    const assembled = devConfigEnv(io.env, { issuer: issuer.issuer, jwksUrl: issuer.jwksUrl, providersFile });
    if (assembled.problems.length > 0) throw new ConfigError(assembled.problems);
    // The one relaxed mode: every production guard is off here, and each is named in the log.
    const config = loadConfig(assembled.env, { mode: "development" });
    for (const warning of [...assembled.ignored, ...relaxationWarnings(config)]) logger.warn(warning);
    const app = await createApp(config, logger, { migrate: true });
    teardown.add(() => app.stop());

    const devKey = await issueDevCallerKey(app);
    const { grpcPort, connectPort, adminPort, opsPort } = await listening(
      "the broker",
      portVariables(config),
      () => app.start(),
    );
    const echoSecretId = await seedDevEchoSecret({
      grpcPort,
      callerKey: devKey,
      issuer: issuer.issuer,
      issuerKey,
    });
    await writeDevState(io.env, {
      issuer: issuer.issuer,
      audience: DEV_AUDIENCE,
      permission: DEV_PERMISSION,
      grpcPort,
      connectPort,
    });
    const endpoints: DevEndpoints = {
      callerKey: devKey,
      grpcPort,
      connectPort,
      adminPort,
      metricsUrl: opsPort === undefined ? undefined : `http://127.0.0.1:${opsPort}/metrics`,
      echoSecretId,
      echoPort: echo.port,
    };
    io.stdout.write(
      json ? `${JSON.stringify({ ...endpoints, commands: devCommands(endpoints) })}\n` : devBanner(endpoints),
    );
  } catch (err) {
    await teardown.run();
    throw err;
  }
  await stopOnSignals(() => teardown.run(), logger);
  return 0;
}

/** A fresh dev caller key each start (the previous one is revoked): it is printed once. */
async function issueDevCallerKey(app: App): Promise<string> {
  const admin = createCallerKeyAdmin({ db: app.database.db });
  for (const key of await admin.list()) {
    if (key.name === DEV_KEY_NAME && key.revokedAt === null) await admin.revoke(key.id);
  }
  const created = await admin.create({
    name: DEV_KEY_NAME,
    scopes: ["secrets:read", "secrets:write", "proxy:call"],
    expiresAt: null,
  });
  return created.key;
}

/** The registry dev mode serves: KEYBROKER_PROVIDERS_FILE (or the shipped one) plus `dev-echo`. */
async function writeDevRegistry(env: CliIo["env"], echoPort: number): Promise<string> {
  const source = env.KEYBROKER_PROVIDERS_FILE ?? SHIPPED_PROVIDERS_FILE;
  let registry: { providers?: unknown };
  try {
    registry = JSON.parse(await readFile(source, "utf8")) as { providers?: unknown };
  } catch (err) {
    throw new ConfigError([
      `KEYBROKER_PROVIDERS_FILE: ${source} cannot be read as JSON (${err instanceof Error ? err.message : "unreadable"})`,
    ]);
  }
  const providers = Array.isArray(registry.providers) ? registry.providers : [];
  const merged = { ...registry, providers: [...providers, devEchoProvider(echoPort)] };
  const path = devPath(env, "providers.json");
  await writeFile(path, `${JSON.stringify(merged, null, 2)}\n`, { mode: 0o600 });
  return path;
}

function portVariables(config: Config): string {
  const ports = [
    `KEYBROKER_GRPC_PORT (${config.grpc.port})`,
    config.connect && `KEYBROKER_CONNECT_PORT (${config.connect.port})`,
    config.admin && `KEYBROKER_ADMIN_GRPC_PORT (${config.admin.port})`,
    config.ops && `KEYBROKER_METRICS_PORT (${config.ops.port})`,
  ];
  return ports.filter(Boolean).join(", ");
}

/**
 * Runs a start-up step that binds a port; a port in use becomes one clear line (exit 1, and the
 * teardown stops what already started), never a stack trace or a process left hanging.
 */
async function listening<T>(what: string, variable: string, start: () => Promise<T>): Promise<T> {
  try {
    return await start();
  } catch (err) {
    const cause = findErrno(err);
    if (cause?.code === "EADDRINUSE" || cause?.code === "EACCES") {
      const where = cause.port === undefined ? "" : ` ${cause.address ?? "127.0.0.1"}:${cause.port}`;
      throw new BrokerError(
        "failed_precondition",
        `${what} cannot listen on${where}: ${cause.code === "EADDRINUSE" ? "the port is in use" : "not allowed"} ` +
          `(another keybroker dev?). Stop what holds it, or choose other ports: ${variable}`,
        { cause: err },
      );
    }
    throw err;
  }
}

function findErrno(err: unknown): (NodeJS.ErrnoException & { port?: number; address?: string }) | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth += 1) {
    if (
      typeof (e as NodeJS.ErrnoException).code === "string" &&
      (e as NodeJS.ErrnoException).syscall !== undefined
    ) {
      return e as NodeJS.ErrnoException & { port?: number; address?: string };
    }
  }
  return undefined;
}
