import { type ChildProcess, fork } from "node:child_process";
import type { RewrapProgress, RewrapReport } from "../rotation/rewrap-job.js";
import type { CliIo, Output } from "./cli-io.js";

/**
 * `keybroker rewrap --workers N` (issue 17 item 4): N processes of the same CLI, each running the
 * rewrap job on the same target. They need nothing from each other: the job already splits the
 * users through leased ranges (rewrap_ranges) and the rate through the database's per-second
 * windows, so each is given the same --rate, the total. The parent forks them with its own
 * arguments (minus --workers) and environment, plus WORKER_ENV so a child runs the job instead
 * of forking again; children report progress and their final report over the IPC channel, and
 * print nothing on stdout (the parent prints one report, or one JSON object).
 */

/** Set in a child's environment: its number (1..N). A child never forks. */
export const WORKER_ENV = "KEYBROKER_REWRAP_WORKER";

/** Worker processes at most: the KMS rate is the limit, not processes; 16 is far past it. */
export const MAX_WORKERS = 16;

type Message =
  | { readonly kind: "rewrap-progress"; readonly progress: RewrapProgress }
  | { readonly kind: "rewrap-report"; readonly report: RewrapReport };

function isMessage(value: unknown): value is Message {
  if (typeof value !== "object" || value === null) return false;
  const kind = (value as { kind?: unknown }).kind;
  return kind === "rewrap-progress" || kind === "rewrap-report";
}

/** `args` without --workers (as `--workers N` or `--workers=N`), for the children. */
export function withoutWorkersFlag(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] as string;
    if (arg === "--") {
      out.push(...args.slice(i));
      break;
    }
    if (arg === "--workers")
      i += 1; // and its value (parseArgs, strict, required one)
    else if (!arg.startsWith("--workers=")) out.push(arg);
  }
  return out;
}

/** How a child talks to its parent; undefined when this process is not a forked worker. */
export interface WorkerChannel {
  readonly worker: number;
  progress(progress: RewrapProgress): void;
  report(report: RewrapReport): Promise<void>;
  /** Called once if the parent goes away (killed): the child then stops as on Ctrl-C. */
  onParentGone(stop: () => void): void;
  /** Closes the channel, so the process can exit (an open one keeps it alive). */
  close(): void;
}

// Progress messages at most this often: the parent redraws at 200 ms on a terminal anyway.
const PROGRESS_EVERY_MS = 200;

export function workerChannel(env: CliIo["env"]): WorkerChannel | undefined {
  const worker = Number(env[WORKER_ENV]);
  // Both the marker and an IPC channel: a stray variable in an operator's shell changes nothing.
  if (!(Number.isInteger(worker) && worker > 0) || process.send === undefined) return undefined;
  let sentAt = Number.NEGATIVE_INFINITY;
  let gone: (() => void) | undefined;
  const onDisconnect = () => gone?.();
  const send = (message: Message) =>
    new Promise<void>((resolve) => {
      if (!process.connected) resolve();
      else process.send?.(message, undefined, {}, () => resolve());
    });
  return {
    worker,
    progress(progress) {
      const now = performance.now();
      if (now - sentAt < PROGRESS_EVERY_MS) return;
      sentAt = now;
      void send({ kind: "rewrap-progress", progress });
    },
    report: (report) => send({ kind: "rewrap-report", report }),
    onParentGone(stop) {
      gone = stop;
      process.once("disconnect", onDisconnect);
    },
    close() {
      process.off("disconnect", onDisconnect);
      if (process.connected) process.disconnect?.();
    },
  };
}

/** One worker process's end: its report, unless it failed before it could send one. */
export interface WorkerOutcome {
  readonly worker: number;
  readonly pid: number | undefined;
  readonly exitCode: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly report: RewrapReport | undefined;
  /**
   * No report, and not because it was stopped: a worker that a forwarded Ctrl-C ended while it
   * was still starting (before its own handler was in place) did no work and did not fail.
   */
  readonly failed: boolean;
}

export interface WorkerProcessesResult {
  readonly outcomes: readonly WorkerOutcome[];
  /** A SIGINT or SIGTERM asked the workers to stop. */
  readonly stopRequested: boolean;
}

export interface WorkerProcessesOptions {
  /** The CLI's arguments for a worker: the command's name, then its arguments without --workers. */
  readonly argv: readonly string[];
  readonly env: CliIo["env"];
  readonly workers: number;
  /** Where the children's stderr and stdout (logs, errors) go. */
  readonly output: Output;
  /** Every worker's latest progress, each time one reports. */
  readonly onProgress: (latest: readonly RewrapProgress[]) => void;
  /** Once, on the first SIGINT or SIGTERM (which is forwarded to every worker). */
  readonly onStop: () => void;
  /** The CLI's entry script (default: this process's, as `node:cluster` would fork it). */
  readonly entry?: string;
}

/**
 * Forks the workers and waits for every one to exit. SIGINT and SIGTERM are forwarded, so each
 * stops gracefully (rows in flight finish, its range is handed back) and a new run resumes.
 * A worker that fails leaves the others running: its range is handed back to them.
 */
export async function runWorkerProcesses(options: WorkerProcessesOptions): Promise<WorkerProcessesResult> {
  const entry = options.entry ?? process.argv[1];
  if (entry === undefined) throw new Error("no CLI entry script to fork");
  const latest: RewrapProgress[] = Array.from({ length: options.workers }, () => ({
    done: 0,
    total: 0,
    rate: 0,
  }));
  const children: ChildProcess[] = [];
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (!stopping) options.onStop();
    stopping = true;
    for (const child of children)
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    const outcomes = Array.from({ length: options.workers }, (_, index) => {
      const worker = index + 1;
      // The parent's own node flags (a tsx loader, say) go with it, as node:cluster does.
      const child = fork(entry, [...options.argv], {
        env: { ...options.env, [WORKER_ENV]: String(worker) },
        stdio: ["ignore", "pipe", "pipe", "ipc"],
      });
      children.push(child);
      child.stdout?.on("data", (chunk: Buffer) => options.output.write(chunk.toString()));
      child.stderr?.on("data", (chunk: Buffer) => options.output.write(chunk.toString()));
      let report: RewrapReport | undefined;
      child.on("message", (message: unknown) => {
        if (!isMessage(message)) return;
        if (message.kind === "rewrap-report") {
          report = message.report;
          return;
        }
        latest[index] = message.progress;
        options.onProgress(latest);
      });
      return new Promise<WorkerOutcome>((resolve) => {
        // "close", not "exit": the child's output is all read by then.
        child.once("close", (exitCode, signal) => {
          const stoppedStarting = stopping && (signal === "SIGINT" || signal === "SIGTERM");
          resolve({ worker, pid: child.pid, exitCode, signal, report, failed: !(report || stoppedStarting) });
        });
        // Could not be started at all: a failed worker.
        child.once("error", (err) => {
          options.output.write(`worker ${worker} could not be started: ${err.message}\n`);
          resolve({ worker, pid: child.pid, exitCode: null, signal: null, report: undefined, failed: true });
        });
      });
    });
    return { outcomes: await Promise.all(outcomes), stopRequested: stopping };
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/** The workers' reports as one: counts summed, the worst state wins. */
export function combineReports(
  result: WorkerProcessesResult,
  totals: { readonly seconds: number; readonly remaining: number },
): RewrapReport {
  const reports = result.outcomes.flatMap((o) => (o.report === undefined ? [] : [o.report]));
  const sum = (pick: (r: RewrapReport) => number) => reports.reduce((n, r) => n + pick(r), 0);
  return {
    rewrapped: sum((r) => r.rewrapped),
    skipped: sum((r) => r.skipped),
    failed: sum((r) => r.failed),
    seconds: totals.seconds,
    remaining: totals.remaining,
    retries: sum((r) => r.retries),
    stopped: result.stopRequested || reports.some((r) => r.stopped),
  };
}
