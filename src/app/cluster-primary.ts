import cluster, { type Worker } from "node:cluster";
import { AggregatorRegistry, Counter, Gauge, Registry } from "prom-client";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import { createOpsServer } from "../observability/ops-server.js";
import type { BoundPorts } from "./servers.js";
import { isWorkerMessage } from "./worker-messages.js";

/**
 * The primary of `serve --workers N` (issue 17 item 3): N broker processes behind the same ports.
 * It builds no broker itself (no database, no keys): it forks the workers, owns the ops port
 * (metrics summed over the workers, readiness), restarts a worker that dies while the others keep
 * serving, and drains them all on SIGTERM. The listening sockets are node:cluster's: a worker's
 * listen() on a port is served by one handle in the primary, which hands each new connection to
 * a worker in turn (round-robin), and the worker gives it to grpc-js or the Connect server as it
 * would a connection it accepted itself (see api/transport/connection-limits.ts).
 */
export interface ClusterPrimaryOptions {
  readonly config: Pick<Config, "ops" | "shutdownGraceMs">;
  readonly logger: Logger;
  readonly workers: number;
  /** Consecutive failed starts (or deaths within `minUptimeMs`) of one worker before giving up. */
  readonly maxQuickFailures?: number;
  readonly minUptimeMs?: number;
  /** First restart delay after a quick failure; doubles each time, capped at `maxBackoffMs`. */
  readonly backoffMs?: number;
  readonly maxBackoffMs?: number;
}

export interface ClusterPrimary {
  /** Resolves with the ports once every worker serves; rejects if the workers cannot start. */
  readonly started: Promise<BoundPorts>;
  /** Resolves with the exit code: 0 after a requested stop, 1 after giving up on a worker. */
  readonly finished: Promise<number>;
  /** Drains every worker (SIGTERM each, bounded by the grace period), then closes the ops port. */
  stop(): Promise<void>;
}

interface Slot {
  readonly index: number;
  worker: Worker | undefined;
  readyAt: number | undefined;
  quickFailures: number;
  restartTimer: NodeJS.Timeout | undefined;
}

const DEFAULTS = { maxQuickFailures: 3, minUptimeMs: 10_000, backoffMs: 500, maxBackoffMs: 30_000 };
// After the grace period a worker has this much longer to close its pools and flush the audit.
const EXIT_MARGIN_MS = 5_000;

export function startClusterPrimary(options: ClusterPrimaryOptions): ClusterPrimary {
  const { config, logger, workers } = options;
  const maxQuickFailures = options.maxQuickFailures ?? DEFAULTS.maxQuickFailures;
  const minUptimeMs = options.minUptimeMs ?? DEFAULTS.minUptimeMs;
  const backoffMs = options.backoffMs ?? DEFAULTS.backoffMs;
  const maxBackoffMs = options.maxBackoffMs ?? DEFAULTS.maxBackoffMs;

  const aggregator = new AggregatorRegistry();
  const own = new Registry();
  const serving = new Gauge({
    name: "keybroker_workers_serving",
    help: "Workers serving now.",
    registers: [own],
  });
  const restarts = new Counter({
    name: "keybroker_worker_restarts_total",
    help: "Workers restarted after they died.",
    registers: [own],
  });
  const slots: Slot[] = Array.from({ length: workers }, (_, index) => ({
    index,
    worker: undefined,
    readyAt: undefined,
    quickFailures: 0,
    restartTimer: undefined,
  }));
  let stopping = false;
  let ports: BoundPorts | undefined;
  let resolveStarted: (ports: BoundPorts) => void = () => {};
  let rejectStarted: (err: Error) => void = () => {};
  const started = new Promise<BoundPorts>((resolve, reject) => {
    resolveStarted = resolve;
    rejectStarted = reject;
  });
  started.catch(() => undefined); // the caller may only await `finished`
  let finish: (code: number) => void = () => {};
  const finished = new Promise<number>((resolve) => {
    finish = resolve;
  });

  const readyCount = () => slots.filter((s) => s.readyAt !== undefined).length;
  const ops =
    config.ops === undefined
      ? undefined
      : createOpsServer({
          metrics: {
            registry: {
              contentType: aggregator.contentType,
              // Counters and histograms are summed over the workers; the primary adds its own.
              metrics: async () => `${await aggregator.clusterMetrics()}\n${await own.metrics()}`,
            },
          },
          readiness: async () => {
            if (stopping) return { ready: false, reasons: ["shutting down"] };
            const ready = readyCount();
            return ready > 0
              ? { ready: true, reasons: [] }
              : { ready: false, reasons: ["no worker serving yet"] };
          },
          logger,
        });

  function fork(slot: Slot): void {
    slot.restartTimer = undefined;
    if (stopping) return;
    const worker = cluster.fork({ KEYBROKER_WORKER_INDEX: String(slot.index) });
    slot.worker = worker;
    slot.readyAt = undefined;
    worker.on("message", (message: unknown) => {
      if (!isWorkerMessage(message) || slot.worker !== worker) return;
      slot.readyAt = Date.now();
      serving.set(readyCount());
      logger.info({ worker: slot.index, pid: worker.process.pid }, "worker serving");
      if (ports === undefined && readyCount() === workers) void allServing(message.ports);
    });
    worker.on("exit", (code, signal) => onExit(slot, worker, code, signal));
  }

  async function allServing(workerPorts: BoundPorts): Promise<void> {
    try {
      const opsPort =
        config.ops === undefined || ops === undefined
          ? undefined
          : await ops.listen(config.ops.host, config.ops.port);
      ports = { ...workerPorts, opsPort };
      logger.info({ ...ports, workers }, "keybroker serving");
      resolveStarted(ports);
    } catch (err) {
      logger.error({ err }, "the ops port could not be bound; stopping the workers");
      rejectStarted(err instanceof Error ? err : new Error("ops port could not be bound"));
      void shutdown(1);
    }
  }

  function onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    const wasReadyAt = slot.readyAt;
    slot.worker = undefined;
    slot.readyAt = undefined;
    serving.set(readyCount());
    if (stopping) return;
    const quick = wasReadyAt === undefined || Date.now() - wasReadyAt < minUptimeMs;
    slot.quickFailures = quick ? slot.quickFailures + 1 : 1;
    const context = { worker: slot.index, pid: worker.process.pid, code, signal };
    if (slot.quickFailures >= maxQuickFailures) {
      logger.error(
        { ...context, failures: slot.quickFailures },
        wasReadyAt === undefined
          ? "a worker failed to start again and again; giving up (its own log above says why)"
          : "a worker keeps dying soon after it starts; giving up (its own log above says why)",
      );
      rejectStarted(new Error("workers could not be started"));
      void shutdown(1);
      return;
    }
    // The first death of a worker that had been up a while is restarted at once; repeated quick
    // failures wait longer each time, so a broken dependency is not hammered by a crash loop.
    const delayMs =
      slot.quickFailures <= 1 ? 0 : Math.min(maxBackoffMs, backoffMs * 2 ** (slot.quickFailures - 2));
    logger.error(
      { ...context, restartInMs: delayMs },
      wasReadyAt === undefined ? "a worker failed to start; retrying" : "a worker died; restarting it",
    );
    restarts.inc();
    slot.restartTimer = setTimeout(() => fork(slot), delayMs);
  }

  let stopped: Promise<void> | undefined;
  function shutdown(code: number): Promise<void> {
    stopped ??= (async () => {
      stopping = true;
      if (ports === undefined) rejectStarted(new Error("stopped before every worker served"));
      for (const slot of slots) clearTimeout(slot.restartTimer);
      const live = slots.flatMap((s) => (s.worker === undefined ? [] : [s.worker]));
      const exits = live.map(
        (worker) =>
          new Promise<void>((resolve) => {
            if (worker.isDead()) resolve();
            else worker.once("exit", () => resolve());
          }),
      );
      // Each worker drains its own calls (health NOT_SERVING, stop accepting, finish in-flight).
      for (const worker of live) worker.process.kill("SIGTERM");
      const deadline = setTimeout(() => {
        for (const worker of live) {
          if (!worker.isDead()) {
            logger.error(
              { pid: worker.process.pid },
              "a worker did not exit after the grace period; killing it",
            );
            worker.process.kill("SIGKILL");
          }
        }
      }, config.shutdownGraceMs + EXIT_MARGIN_MS);
      await Promise.all(exits);
      clearTimeout(deadline);
      await ops?.close();
      logger.info("keybroker stopped");
      finish(code);
    })();
    return stopped;
  }

  logger.info({ workers }, "starting workers");
  for (const slot of slots) fork(slot);
  return { started, finished, stop: () => shutdown(0) };
}
