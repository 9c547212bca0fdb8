import type { Logger } from "../log/logger.js";

/** Stops once on SIGTERM/SIGINT (health NOT_SERVING, drain, close), then lets the process exit. */
export function stopOnSignals(stop: () => Promise<void>, logger: Logger): Promise<void> {
  return new Promise((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) return;
      stopping = true;
      logger.info({ signal }, "shutting down");
      stop()
        .catch((err: unknown) => logger.error({ err }, "shutdown failed"))
        .finally(() => {
          process.off("SIGTERM", onSignal);
          process.off("SIGINT", onSignal);
          resolve();
        });
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
  });
}
