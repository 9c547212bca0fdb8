import { openKeyedOpsContext } from "../app/ops-context.js";
import { loadKeyedOpsConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import {
  createRewrapJob,
  type RewrapJob,
  type RewrapPlan,
  type RewrapProgress,
  type RewrapReport,
} from "../rotation/rewrap-job.js";
import { JSON_OPTION, parseCommandArgs } from "./cli-args.js";
import { type CliIo, createCommandLogger, type Output } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec, DATABASE_HELP } from "./command-spec.js";
import { DEV_OPTION, openLockedOps, opsEnvironment } from "./ops-environment.js";
import {
  combineReports,
  MAX_WORKERS,
  runWorkerProcesses,
  type WorkerChannel,
  type WorkerProcessesResult,
  withoutWorkersFlag,
  workerChannel,
} from "./rewrap-workers.js";

/** The name this module gave CliIo before every command shared it (tests import it). */
export type CommandIo = CliIo;
export type { Output } from "./cli-io.js";

// Conservative defaults: a fraction of the smallest regional KMS quota (5,500 calls/s shared
// by the account); raise --rate and --concurrency for big tables (see bench/tools/rewrap-bench.ts).
const DEFAULTS = { batchSize: 500, concurrency: 16, rate: 1_000 } as const;
const TTY_REFRESH_MS = 200;
const LOG_LINE_EVERY_MS = 5_000;

const USAGE =
  "usage: keybroker rewrap --to <key ARN|key id|alias|local:N|current> [--dry-run] " +
  "[--batch-size N] [--concurrency N] [--rate N] [--workers N]\n";

const HELP =
  "Usage: keybroker rewrap --to <key ARN|key id|alias|local:N|current> [options]\n\n" +
  "Re-wraps every stored data key (users' and OAuth apps') and the pepper under another master key\n" +
  "while the broker keeps serving (KMS ReEncrypt: no plaintext key leaves the KMS). Ctrl-C stops\n" +
  "gracefully; run again to resume. Reads the broker's database and keyring variables; no AUTH0_*\n" +
  "needed.\n\n" +
  "  --to KEY            the target master key; refused at once if it does not exist or is disabled\n" +
  "  --dry-run           check the target and print the plan; re-encrypt one row in memory, write nothing\n" +
  `  --batch-size N      rows read per page (${DEFAULTS.batchSize})\n` +
  `  --concurrency N     KMS calls in flight (${DEFAULTS.concurrency})\n` +
  `  --rate N            KMS calls per second at most, in total over every worker (${DEFAULTS.rate})\n` +
  `  --workers N         run the job in N processes (1 to ${MAX_WORKERS}; default 1; Postgres only): they\n` +
  "                      split the users through leased ranges and share --rate; --concurrency and\n" +
  "                      --batch-size are each worker's. Ctrl-C stops them all; --dry-run runs once\n\n" +
  DATABASE_HELP +
  "\nOptions:\n" +
  COMMON_HELP;

export const rewrapCommand: CommandSpec = {
  name: "rewrap",
  summary: "re-wrap every data key and the pepper under another master key, online",
  help: HELP,
  subcommands: [],
  flags: ["--to", "--dry-run", "--batch-size", "--concurrency", "--rate", "--workers", "--dev", "--json"],
  run: runRewrap,
};

const number = new Intl.NumberFormat("en-US");

function formatProgress(p: RewrapProgress): string {
  const total = Math.max(p.total, p.done);
  const percent = total === 0 ? 100 : (p.done / total) * 100;
  const eta = p.rate > 0 ? Math.ceil((total - p.done) / p.rate) : undefined;
  return (
    `rewrap: ${number.format(p.done)} / ${number.format(total)} rows (${percent.toFixed(1)}%), ` +
    `${number.format(Math.round(p.rate))} rows/s${eta === undefined ? "" : `, ETA ${eta} s`}`
  );
}

/**
 * The progress line: on a terminal one line rewritten in place; in a log file or a pipe a
 * line every few seconds, so CI and `kubectl logs` get a readable history.
 */
export function createProgressLine(
  out: Output,
  options: { now?: () => number; everyMs?: number } = {},
): { update(progress: RewrapProgress): void; finish(): void } {
  const now = options.now ?? Date.now;
  const tty = out.isTTY === true;
  const everyMs = options.everyMs ?? (tty ? TTY_REFRESH_MS : LOG_LINE_EVERY_MS);
  let last: RewrapProgress | undefined;
  let shownAt = Number.NEGATIVE_INFINITY;
  let dirty = false;
  let open = false;

  function show(progress: RewrapProgress): void {
    if (tty) {
      out.write(`\r\x1b[K${formatProgress(progress)}`);
      open = true;
    } else {
      out.write(`${formatProgress(progress)}\n`);
    }
    shownAt = now();
    dirty = false;
  }

  return {
    update(progress) {
      last = progress;
      dirty = true;
      if (now() - shownAt >= everyMs) show(progress);
    },
    finish() {
      if (last !== undefined && dirty) show(last);
      if (open) out.write("\n");
      open = false;
    },
  };
}

function positiveInteger(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const parsed = Number(value);
  if (!(Number.isInteger(parsed) && parsed > 0)) {
    throw new BrokerError("invalid_argument", `--${flag} must be a positive integer`);
  }
  return parsed;
}

function describePlan(targetKeyId: string, plan: RewrapPlan): string {
  const lines = [`target master key: ${targetKeyId}`];
  const sources = Object.entries(plan.byKey);
  if (sources.length === 0 && !plan.pepper && plan.oauthApps === 0) {
    lines.push("every data key and the pepper are already wrapped under the target");
  } else {
    const apps = plan.oauthApps > 0 ? `, ${number.format(plan.oauthApps)} OAuth app(s)` : "";
    lines.push(
      `to rewrap: ${number.format(plan.users)} user data key(s)${apps}${plan.pepper ? " and the pepper" : ""}`,
    );
    for (const [keyId, users] of sources) lines.push(`  from ${keyId}: ${number.format(users)} user(s)`);
  }
  return `${lines.join("\n")}\n`;
}

function describeReport(report: RewrapReport, workers = 1): string {
  const by = workers > 1 ? ` (${workers} workers)` : "";
  return (
    `rewrap ${report.stopped ? "stopped" : "finished"} in ${report.seconds.toFixed(1)} s${by}: ` +
    `${number.format(report.rewrapped)} rewrapped, ${number.format(report.skipped)} skipped, ` +
    `${number.format(report.failed)} failed, ${number.format(report.remaining)} remaining` +
    `${report.retries > 0 ? ` (${number.format(report.retries)} KMS calls retried)` : ""}\n`
  );
}

function rowsLeft(plan: RewrapPlan): number {
  return plan.users + (plan.pepper ? 1 : 0) + plan.oauthApps;
}

function exitCode(report: RewrapReport): number {
  return report.stopped ? 130 : report.remaining > 0 ? 1 : 0;
}

function closingWords(report: RewrapReport): string {
  if (report.stopped) return "run the same command again to resume\n";
  if (report.remaining > 0) {
    return "some rows are still on other master keys: run again; rows counted as failed need an operator (see the log)\n";
  }
  return "every data key and the pepper are wrapped under the target; see `keybroker keys status`\n";
}

function workerCount(value: string | undefined): number {
  if (value === undefined) return 1;
  const workers = Number(value);
  if (!(Number.isInteger(workers) && workers >= 1 && workers <= MAX_WORKERS)) {
    throw new BrokerError("invalid_argument", `--workers must be an integer from 1 to ${MAX_WORKERS}`);
  }
  return workers;
}

/** Stops the job gracefully on SIGINT/SIGTERM while `work` runs; `onStop` is called once. */
async function untilSignal<T>(work: (signal: AbortSignal) => Promise<T>, onStop: () => void): Promise<T> {
  const stop = new AbortController();
  const onSignal = () => {
    if (!stop.signal.aborted) onStop();
    stop.abort();
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    return await work(stop.signal);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

/**
 * `keybroker rewrap`: re-wraps every stored data key and the pepper under another master
 * key while the broker keeps serving (SPEC I9). Uses the broker's own configuration.
 * Ctrl-C stops gracefully (rows in flight finish); running the command again resumes.
 * `--workers N` runs the job in N processes of this CLI (rewrap-workers.ts); such a forked
 * worker runs the job and reports to its parent instead of printing.
 */
export async function runRewrap(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs(args, {
    to: { type: "string" },
    "dry-run": { type: "boolean", default: false },
    "batch-size": { type: "string" },
    concurrency: { type: "string" },
    rate: { type: "string" },
    workers: { type: "string" },
    ...DEV_OPTION,
    ...JSON_OPTION,
  });
  if (values.to === undefined) {
    io.stderr.write(USAGE);
    return 2;
  }
  const json = values.json === true;
  const batchSize = positiveInteger("batch-size", values["batch-size"], DEFAULTS.batchSize);
  const concurrency = positiveInteger("concurrency", values.concurrency, DEFAULTS.concurrency);
  const rate = positiveInteger("rate", values.rate, DEFAULTS.rate);
  const workers = workerCount(values.workers);

  const config = loadKeyedOpsConfig(opsEnvironment("rewrap", io.env, values.dev));
  if (workers > 1 && config.database.kind === "pglite") {
    throw new BrokerError(
      "invalid_argument",
      "--workers above 1 needs Postgres (DATABASE_URL): the embedded database belongs to one process",
    );
  }
  const channel = workerChannel(io.env);
  // Logs go to stderr so stdout holds the plan, the progress line and the report.
  const logger = createCommandLogger(io);
  const ops = await openLockedOps("rewrap", config.database, () =>
    openKeyedOpsContext(config, logger, { schema: "require-current" }),
  );
  try {
    const configured = ops.keyring;
    // Refuses a target that does not exist or cannot wrap, before anything is planned.
    const targetKeyId = await configured.resolveKeyId(values.to);
    const jobDeps = {
      db: ops.database.db,
      keyring: configured.keyring,
      logger,
      batchSize,
      concurrency,
      ratePerSecond: rate,
    };
    if (channel !== undefined) {
      const job = createRewrapJob({ ...jobDeps, onProgress: (progress) => channel.progress(progress) });
      return await runAsWorker(job, targetKeyId, channel);
    }
    // With --json, stdout carries one object at the end; progress would interleave with it.
    const line = json ? { update() {}, finish() {} } : createProgressLine(io.stdout);
    const job = createRewrapJob({ ...jobDeps, onProgress: (progress) => line.update(progress) });

    const plan = await job.plan(targetKeyId);
    if (!json) io.stdout.write(describePlan(targetKeyId, plan));
    const configuredKeyId = configured.keyring.currentKeyId();
    if (targetKeyId !== configuredKeyId) {
      io.stderr.write(
        `warning: the broker's configured master key is ${configuredKeyId}; new data keys ` +
          "are still wrapped under it. Point the broker at the target first, then rewrap (run again to catch up).\n",
      );
    }
    if (values["dry-run"]) {
      await job.run(targetKeyId, { dryRun: true });
      io.stdout.write(
        json
          ? `${JSON.stringify({ targetKeyId, dryRun: true, plan })}\n`
          : "dry run: the target key exists and can wrap; the key management service re-encrypted one row " +
              "to it (if any is stored); nothing was written\n",
      );
      return 0;
    }
    if (workers > 1) {
      return await runInWorkers({ args, io, json, workers, targetKeyId, plan, line, job });
    }

    let report: RewrapReport;
    try {
      report = await untilSignal(
        (signal) => job.run(targetKeyId, { signal }),
        () => io.stderr.write("\nstopping: rows in flight finish, then the job ends\n"),
      );
    } finally {
      line.finish();
    }
    const code = exitCode(report);
    if (json) {
      io.stdout.write(`${JSON.stringify({ targetKeyId, dryRun: false, plan, report })}\n`);
      return code;
    }
    io.stdout.write(describeReport(report));
    io.stdout.write(closingWords(report));
    return code;
  } finally {
    try {
      await ops.close();
    } finally {
      // A worker's open IPC channel would keep it alive after the job.
      channel?.close();
    }
  }
}

/** A forked worker: the job, stopped by a signal or by its parent going away; the report to the parent. */
async function runAsWorker(job: RewrapJob, targetKeyId: string, channel: WorkerChannel): Promise<number> {
  // Quietly: the parent says "stopping" once for every worker.
  const report = await untilSignal(
    (signal) => {
      const stop = new AbortController();
      signal.addEventListener("abort", () => stop.abort(), { once: true });
      channel.onParentGone(() => stop.abort());
      return job.run(targetKeyId, { signal: stop.signal });
    },
    () => undefined,
  );
  await channel.report(report);
  return exitCode(report);
}

/**
 * The parent of `--workers N`: forks the workers, shows their progress as one line, and prints
 * one report (or one JSON object) for them all. The rows left are counted afresh at the end.
 */
async function runInWorkers(run: {
  readonly args: readonly string[];
  readonly io: CliIo;
  readonly json: boolean;
  readonly workers: number;
  readonly targetKeyId: string;
  readonly plan: RewrapPlan;
  readonly line: ReturnType<typeof createProgressLine>;
  readonly job: RewrapJob;
}): Promise<number> {
  const { io, json, workers, targetKeyId, plan, line, job } = run;
  const total = rowsLeft(plan);
  if (!json) io.stdout.write(`${workers} worker processes; --rate is their total\n`);
  const started = performance.now();
  let result: WorkerProcessesResult;
  try {
    result = await runWorkerProcesses({
      argv: ["rewrap", ...withoutWorkersFlag(run.args)],
      env: io.env,
      workers,
      output: io.stderr,
      onProgress: (latest) => {
        const done = latest.reduce((n, p) => n + p.done, 0);
        line.update({ done, total: Math.max(total, done), rate: latest.reduce((n, p) => n + p.rate, 0) });
      },
      onStop: () => io.stderr.write("\nstopping: rows in flight finish in every worker, then they end\n"),
    });
  } finally {
    line.finish();
  }
  const seconds = (performance.now() - started) / 1000;
  const report = combineReports(result, { seconds, remaining: rowsLeft(await job.plan(targetKeyId)) });
  const failed = result.outcomes.filter((o) => o.failed);
  const code = failed.length > 0 ? 1 : exitCode(report);
  if (json) {
    const each = result.outcomes.map(({ worker, pid, exitCode, signal, report, failed }) => ({
      worker,
      pid,
      exitCode,
      signal,
      failed,
      report,
    }));
    io.stdout.write(`${JSON.stringify({ targetKeyId, dryRun: false, plan, report, workers: each })}\n`);
    return code;
  }
  for (const o of failed) {
    const how = o.signal !== null ? `killed by ${o.signal}` : `exit code ${o.exitCode ?? "none"}`;
    io.stdout.write(`worker ${o.worker} (pid ${o.pid ?? "?"}) failed (${how}); its error is above\n`);
  }
  io.stdout.write(describeReport(report, workers));
  io.stdout.write(closingWords(report));
  return code;
}
