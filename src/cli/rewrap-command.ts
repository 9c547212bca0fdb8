import { openKeyedOpsContext } from "../app/ops-context.js";
import { loadKeyedOpsConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import {
  createRewrapJob,
  type RewrapPlan,
  type RewrapProgress,
  type RewrapReport,
} from "../rotation/rewrap-job.js";
import { JSON_OPTION, parseCommandArgs } from "./cli-args.js";
import { type CliIo, createCommandLogger, type Output } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec, DATABASE_HELP } from "./command-spec.js";
import { DEV_OPTION, openLockedOps, opsEnvironment } from "./ops-environment.js";

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
  "[--batch-size N] [--concurrency N] [--rate N]\n";

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
  `  --rate N            KMS calls per second at most (${DEFAULTS.rate})\n\n` +
  DATABASE_HELP +
  "\nOptions:\n" +
  COMMON_HELP;

export const rewrapCommand: CommandSpec = {
  name: "rewrap",
  summary: "re-wrap every data key and the pepper under another master key, online",
  help: HELP,
  subcommands: [],
  flags: ["--to", "--dry-run", "--batch-size", "--concurrency", "--rate", "--dev", "--json"],
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

function describeReport(report: RewrapReport): string {
  return (
    `rewrap ${report.stopped ? "stopped" : "finished"} in ${report.seconds.toFixed(1)} s: ` +
    `${number.format(report.rewrapped)} rewrapped, ${number.format(report.skipped)} skipped, ` +
    `${number.format(report.failed)} failed, ${number.format(report.remaining)} remaining` +
    `${report.retries > 0 ? ` (${number.format(report.retries)} KMS calls retried)` : ""}\n`
  );
}

/**
 * `keybroker rewrap`: re-wraps every stored data key and the pepper under another master
 * key while the broker keeps serving (SPEC I9). Uses the broker's own configuration.
 * Ctrl-C stops gracefully (rows in flight finish); running the command again resumes.
 */
export async function runRewrap(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs(args, {
    to: { type: "string" },
    "dry-run": { type: "boolean", default: false },
    "batch-size": { type: "string" },
    concurrency: { type: "string" },
    rate: { type: "string" },
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

  const config = loadKeyedOpsConfig(opsEnvironment("rewrap", io.env, values.dev));
  // Logs go to stderr so stdout holds the plan, the progress line and the report.
  const logger = createCommandLogger(io);
  const ops = await openLockedOps("rewrap", config.database, () =>
    openKeyedOpsContext(config, logger, { schema: "require-current" }),
  );
  try {
    const configured = ops.keyring;
    // Refuses a target that does not exist or cannot wrap, before anything is planned.
    const targetKeyId = await configured.resolveKeyId(values.to);
    // With --json, stdout carries one object at the end; progress would interleave with it.
    const line = json ? { update() {}, finish() {} } : createProgressLine(io.stdout);
    const job = createRewrapJob({
      db: ops.database.db,
      keyring: configured.keyring,
      logger,
      batchSize,
      concurrency,
      ratePerSecond: rate,
      onProgress: (progress) => line.update(progress),
    });

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

    const stop = new AbortController();
    const onSignal = () => {
      if (!stop.signal.aborted) io.stderr.write("\nstopping: rows in flight finish, then the job ends\n");
      stop.abort();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    let report: RewrapReport;
    try {
      report = await job.run(targetKeyId, { signal: stop.signal });
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      line.finish();
    }
    const code = report.stopped ? 130 : report.remaining > 0 ? 1 : 0;
    if (json) {
      io.stdout.write(`${JSON.stringify({ targetKeyId, dryRun: false, plan, report })}\n`);
      return code;
    }
    io.stdout.write(describeReport(report));
    if (report.stopped) {
      io.stdout.write("run the same command again to resume\n");
    } else if (report.remaining > 0) {
      io.stdout.write(
        "some rows are still on other master keys: run again; rows counted as failed need an operator (see the log)\n",
      );
    } else {
      io.stdout.write(
        "every data key and the pepper are wrapped under the target; see `keybroker keys status`\n",
      );
    }
    return code;
  } finally {
    await ops.close();
  }
}
