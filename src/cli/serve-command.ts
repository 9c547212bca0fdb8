import { createApp } from "../app/create-app.js";
import { loadConfig, relaxationWarnings } from "../config/config.js";
import { createLogger } from "../log/logger.js";
import { parseCommandArgs } from "./cli-args.js";
import type { CliIo } from "./cli-io.js";
import type { CommandSpec } from "./command-spec.js";
import { stopOnSignals } from "./shutdown-signals.js";

const HELP =
  "Usage: keybroker serve\n\n" +
  "Runs the broker with production rules: everything from the environment (src/config/config.ts\n" +
  "is the schema; docs/operations.md and README.md explain it), nothing embedded. A guard is\n" +
  "relaxed only by its own KEYBROKER_ALLOW_* variable, each logged at start-up. Logs are JSON lines\n" +
  "on stdout. Run `keybroker migrate` first. SIGTERM or SIGINT drains and stops.\n\n" +
  "Options:\n  -h, --help        this help\n";

export const serveCommand: CommandSpec = {
  name: "serve",
  summary: "run the broker (production: configuration from the environment)",
  help: HELP,
  subcommands: [],
  flags: [],
  run: runServe,
};

/**
 * Production entry point: everything from the environment, nothing embedded. Production rules
 * always apply (NODE_ENV changes nothing); a guard is relaxed only by its own KEYBROKER_ALLOW_*
 * variable, and each one relaxed is logged at start-up (review L7).
 */
export async function runServe(args: string[], io: CliIo): Promise<number> {
  parseCommandArgs(args, {});
  const config = loadConfig(io.env, { mode: "production" });
  const logger = createLogger({ level: config.logLevel });
  for (const warning of relaxationWarnings(config)) logger.warn(warning);
  if (config.auditCheckpoints.key === undefined) {
    logger.warn(
      "no audit checkpoint key (KEYBROKER_AUDIT_CHECKPOINT_KEY_ID): a cut or wiped audit trail will not show",
    );
  }
  const app = await createApp(config, logger, { migrate: false });
  await app.start();
  await stopOnSignals(() => app.stop(), logger);
  return 0;
}
