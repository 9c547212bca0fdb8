import { createApp } from "../app/create-app.js";
import { loadConfig, relaxationWarnings } from "../config/config.js";
import { createLogger } from "../log/logger.js";
import type { CliIo } from "./cli-io.js";
import { stopOnSignals } from "./shutdown-signals.js";

/**
 * Production entry point: everything from the environment, nothing embedded. Production rules
 * always apply (NODE_ENV changes nothing); a guard is relaxed only by its own KEYBROKER_ALLOW_*
 * variable, and each one relaxed is logged at start-up (review L7).
 */
export async function runServe(_args: string[], io: CliIo): Promise<number> {
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
