import cluster from "node:cluster";
import { AggregatorRegistry } from "prom-client";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import { createApp } from "./create-app.js";
import type { WorkerMessage } from "./worker-messages.js";

/**
 * One worker of `serve --workers N` (node:cluster). It builds the whole broker as a single
 * process does, except the ops port: the primary serves /metrics (this worker's registry,
 * collected over IPC and summed with the others'), /livez and /readyz. Its listeners are shared
 * through the primary, which hands each new connection to one worker in turn.
 * Resolves once started; `stop` drains and closes it.
 */
export async function startClusterWorker(config: Config, logger: Logger): Promise<{ stop(): Promise<void> }> {
  const app = await createApp({ ...config, ops: undefined }, logger, { migrate: false });
  // prom-client answers the primary's metric requests with the registries named here.
  new AggregatorRegistry();
  AggregatorRegistry.setRegistries([app.metricsRegistry]);
  const ports = await app.start();
  const ready: WorkerMessage = { type: "keybroker:worker-ready", ports };
  process.send?.(ready);
  return {
    async stop() {
      await app.stop();
      // The IPC channel would keep the process alive: nothing is left to say to the primary.
      if (cluster.worker?.isConnected()) cluster.worker.disconnect();
    },
  };
}
