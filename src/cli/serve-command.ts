import cluster from "node:cluster";
import { availableParallelism } from "node:os";
import { startClusterPrimary } from "../app/cluster-primary.js";
import { startClusterWorker } from "../app/cluster-worker.js";
import { createApp } from "../app/create-app.js";
import { type Config, loadConfig, relaxationWarnings } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { createLogger, type Logger } from "../log/logger.js";
import { parseCommandArgs } from "./cli-args.js";
import type { CliIo } from "./cli-io.js";
import type { CommandSpec } from "./command-spec.js";
import { stopOnSignals } from "./shutdown-signals.js";

const HELP =
  "Usage: keybroker serve [--workers N]\n\n" +
  "Runs the broker with production rules: everything from the environment (src/config/config.ts\n" +
  "is the schema; docs/operations.md and README.md explain it), nothing embedded. A guard is\n" +
  "relaxed only by its own KEYBROKER_ALLOW_* variable, each logged at start-up. Logs are JSON lines\n" +
  "on stdout. Run `keybroker migrate` first. SIGTERM or SIGINT drains and stops.\n\n" +
  "Options:\n  --workers N       N broker processes behind the same ports (default: one per core;\n" +
  "                    1 with the embedded database)\n  -h, --help        this help\n";

export const serveCommand: CommandSpec = {
  name: "serve",
  summary: "run the broker (production: configuration from the environment)",
  help: HELP,
  subcommands: [],
  flags: ["--workers"],
  run: runServe,
};

/**
 * Production entry point: everything from the environment, nothing embedded. Production rules
 * always apply (NODE_ENV changes nothing); a guard is relaxed only by its own KEYBROKER_ALLOW_*
 * variable, and each one relaxed is logged at start-up (review L7).
 *
 * `--workers N` (default: the cores this process may use) runs N broker processes behind the
 * same ports (app/cluster-primary.ts); 1 runs the broker in this process, as before.
 */
export async function runServe(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs(args, { workers: { type: "string" } });
  const config = loadConfig(io.env, { mode: "production" });
  const logger = createLogger({ level: config.logLevel });
  if (cluster.isWorker) return serveAsWorker(config, logger);
  const workers = workerCount(values.workers, config);
  for (const warning of relaxationWarnings(config)) logger.warn(warning);
  if (config.auditCheckpoints.key === undefined) {
    logger.warn(
      "no audit checkpoint key (KEYBROKER_AUDIT_CHECKPOINT_KEY_ID): a cut or wiped audit trail will not show",
    );
  }
  if (workers > 1) {
    const primary = startClusterPrimary({ config, logger, workers });
    void stopOnSignals(() => primary.stop(), logger);
    return primary.finished;
  }
  const app = await createApp(config, logger, { migrate: false });
  await app.start();
  await stopOnSignals(() => app.stop(), logger);
  return 0;
}

function workerCount(flag: string | undefined, config: Config): number {
  if (flag === undefined) {
    // The embedded database is one process's: it cannot be shared by workers.
    return config.database.kind === "pglite" ? 1 : availableParallelism();
  }
  const workers = Number(flag);
  if (!(Number.isInteger(workers) && workers >= 1 && workers <= 256)) {
    throw new BrokerError("invalid_argument", "--workers must be an integer from 1 to 256");
  }
  if (workers > 1 && config.database.kind === "pglite") {
    throw new BrokerError(
      "invalid_argument",
      "--workers above 1 needs Postgres (DATABASE_URL): the embedded database belongs to one process",
    );
  }
  return workers;
}

/** A worker forked by the primary: serves until SIGTERM, then exits; a failed start exits 1. */
async function serveAsWorker(config: Config, logger: Logger): Promise<number> {
  let worker: { stop(): Promise<void> };
  try {
    worker = await startClusterWorker(config, logger);
  } catch (err) {
    logger.error({ err }, "worker failed to start");
    // The IPC channel would keep a failed worker alive: leave, so the primary sees the failure.
    process.exit(1);
  }
  await stopOnSignals(() => worker.stop(), logger);
  return 0;
}
