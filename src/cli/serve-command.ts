import { createApp } from "../app/create-app.js";
import { loadConfig } from "../config/config.js";
import { createLogger } from "../log/logger.js";
import type { CliIo } from "./cli-io.js";
import { stopOnSignals } from "./shutdown-signals.js";

/** Production entry point: everything from the environment, nothing embedded. */
export async function runServe(_args: string[], io: CliIo): Promise<number> {
  const config = loadConfig(io.env);
  const logger = createLogger({ level: config.logLevel });
  const app = await createApp(config, logger, { migrate: false });
  await app.start();
  await stopOnSignals(() => app.stop(), logger);
  return 0;
}
