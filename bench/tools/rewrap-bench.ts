/**
 * Times the online rewrap job (SPEC I9) on Postgres against the local KMS server with
 * injected latency, for one or more table sizes:
 *
 *   npx tsx bench/tools/rewrap-bench.ts --users 10000,100000 --latency-ms 5 [--concurrency 32]
 *     [--rate 5000] [--batch-size 500] [--workers 1,2] [--database-url postgres://…] [--json]
 *
 * The KMS server runs in a child process (as a real KMS is remote: its CPU is not ours).
 * `--workers N` runs N rewrap jobs in N processes on the same target, as `keybroker rewrap
 * --workers N` does: they split the users through leased ranges and share the rate (issue 17).
 * One worker runs the job in this process; N > 1 are timed from their fork, start-up included.
 * Seeding is not timed: each user gets a real data key from GenerateDataKey under its own
 * encryption context at 0 ms latency, bulk-inserted; then latency is switched on and rewraps
 * are timed, one per worker count in the list: A→B with the first, B→C (a fresh key) with the
 * second, and so on, on the same rows. Each size uses a fresh throwaway database.
 */
import { fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { KMSClient } from "@aws-sdk/client-kms";
import { type Kysely, sql } from "kysely";
import { createAwsKmsKeyring, createKmsClient } from "../../src/keys/aws-kms-keyring.js";
import { loadOrCreatePepper } from "../../src/keys/pepper.js";
import { userKeyContext } from "../../src/keys/user-data-keys.js";
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { readKeyStatus } from "../../src/rotation/key-status.js";
import { createRewrapJob } from "../../src/rotation/rewrap-job.js";
import { openDatabase } from "../../src/store/database.js";
import { migrateToLatest } from "../../src/store/migrate.js";
import type { Database } from "../../src/store/schema.js";
import { createThrowawayDatabase } from "../../test/support/throwaway-database.js";
import { type KmsChild, serveKmsIfChild, startKmsChild } from "../lib/kms-child.js";

// ---- the parent: seed, then time the rewrap -------------------------------------------------

async function forEachConcurrently<T>(items: readonly T[], limit: number, work: (item: T) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) {
        const item = items[next++] as T;
        await work(item);
      }
    }),
  );
}

interface JobChildInput {
  readonly databaseUrl: string;
  readonly endpoint: string;
  readonly region: string;
  readonly source: string;
  readonly target: string;
  readonly concurrency: number;
  readonly rate: number;
  readonly batchSize: number;
}

interface JobChildOutput {
  readonly rewrapped: number;
  readonly retries: number;
  readonly cpuMs: number;
}

/** A `--rewrap-child`: one rewrap job in its own process, on the parent's database and KMS. */
async function serveRewrapChild(): Promise<void> {
  const input = await new Promise<JobChildInput>((resolve) => process.once("message", resolve));
  const logger = createLogger({ level: "error" });
  const database = await openDatabase(
    {
      kind: "postgres",
      url: new Redacted(input.databaseUrl),
      maxConnections: 10,
      connectTimeoutMs: 5_000,
      statementTimeoutMs: 60_000,
    },
    logger,
  );
  const client = createKmsClient({
    region: input.region,
    endpoint: input.endpoint,
    maxAttempts: 3,
    credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
  });
  try {
    const keyring = createAwsKmsKeyring({ client, keyId: input.source });
    const job = createRewrapJob({
      db: database.db,
      keyring,
      logger,
      batchSize: input.batchSize,
      concurrency: input.concurrency,
      ratePerSecond: input.rate,
    });
    const cpuBefore = process.cpuUsage();
    const report = await job.run(input.target);
    const cpu = process.cpuUsage(cpuBefore);
    const output: JobChildOutput = {
      rewrapped: report.rewrapped,
      retries: report.retries,
      cpuMs: (cpu.user + cpu.system) / 1000,
    };
    process.send?.(output);
  } finally {
    client.destroy();
    await database.close();
    process.disconnect?.();
  }
}

function runRewrapChild(input: JobChildInput): Promise<JobChildOutput> {
  const child = fork(fileURLToPath(import.meta.url), ["--rewrap-child"], { stdio: "inherit" });
  return new Promise((resolve, reject) => {
    child.once("message", (output: JobChildOutput) => resolve(output));
    child.once("exit", (code) => reject(new Error(`rewrap child exited with ${code} before reporting`)));
    child.send(input);
  });
}

interface Result {
  readonly users: number;
  readonly workers: number;
  readonly seconds: number;
  readonly rowsPerSecond: number;
  readonly cpuMsPerRow: number;
  readonly reEncryptCalls: number;
  readonly retries: number;
}

interface RunOptions {
  readonly latencyMs: number;
  readonly concurrency: number;
  readonly rate: number;
  readonly batchSize: number;
}

/** Seeds `users` users on a fresh database, then times one rewrap to a fresh key per worker count. */
async function measure(
  kms: KmsChild,
  adminUrl: string,
  users: number,
  workerCounts: readonly number[],
  options: RunOptions,
): Promise<Result[]> {
  const logger = createLogger({ level: "error" });
  const throwaway = await createThrowawayDatabase(adminUrl, "keybroker_bench_rewrap");
  const database = await openDatabase(
    {
      kind: "postgres",
      url: new Redacted(throwaway.url),
      maxConnections: 10,
      connectTimeoutMs: 5_000,
      statementTimeoutMs: 60_000,
    },
    logger,
  );
  const client = createKmsClient({
    region: kms.region,
    endpoint: kms.endpoint,
    maxAttempts: 3,
    credentials: { accessKeyId: "bench", secretAccessKey: "bench" },
  });
  try {
    await migrateToLatest(database.db);
    await kms.call({ op: "setLatency", ms: 0 });
    let source = await kms.call<string>({ op: "createKey" });
    const seeding = createAwsKmsKeyring({ client, keyId: source });
    (await loadOrCreatePepper(database.db, seeding)).fill(0);

    const seedStart = performance.now();
    const refs = Array.from({ length: users }, () => randomBytes(32));
    const rows: Array<{ user_ref: Buffer; wrapped_data_key: Uint8Array; master_key_id: string }> = [];
    await forEachConcurrently(refs, 64, async (ref) => {
      const generated = await seeding.generateDataKey(userKeyContext(ref));
      generated.plaintext.fill(0);
      rows.push({ user_ref: ref, wrapped_data_key: generated.wrapped, master_key_id: generated.keyId });
    });
    for (let i = 0; i < rows.length; i += 2_000) {
      await database.db
        .insertInto("users")
        .values(rows.slice(i, i + 2_000))
        .execute();
    }
    // Fresh statistics, as a long-lived table has: the planner then walks the primary key.
    await sql`analyze users`.execute(database.db);
    process.stderr.write(
      `  seeded ${users} users in ${((performance.now() - seedStart) / 1000).toFixed(1)} s\n`,
    );

    const results: Result[] = [];
    for (const workers of workerCounts) {
      await kms.call({ op: "setLatency", ms: 0 });
      const target = await kms.call<string>({ op: "createKey" });
      // The rows just moved are rewritten versions: let the planner see the table as it is now.
      await sql`vacuum analyze users`.execute(database.db);
      process.stderr.write(`  ${workers} worker(s):\n`);
      results.push(
        await timeRewrap(kms, database.db, client, {
          ...options,
          users,
          workers,
          source,
          target,
          url: throwaway.url,
        }),
      );
      source = target;
    }
    return results;
  } finally {
    client.destroy();
    await database.close();
    await throwaway.drop();
  }
}

/** Times one rewrap of every row from `source` to `target` with `workers` job processes. */
async function timeRewrap(
  kms: KmsChild,
  db: Kysely<Database>,
  client: KMSClient,
  run: RunOptions & {
    readonly users: number;
    readonly workers: number;
    readonly source: string;
    readonly target: string;
    readonly url: string;
  },
): Promise<Result> {
  const logger = createLogger({ level: "error" });
  const { users, workers, source, target } = run;
  const keyring = createAwsKmsKeyring({ client, keyId: source });
  await kms.call({ op: "setLatency", ms: run.latencyMs });
  await kms.call({ op: "resetCounts" });
  let report: { seconds: number; rewrapped: number; retries: number; remaining: number };
  let cpuMs: number;
  if (workers === 1) {
    let shownAt = 0;
    const job = createRewrapJob({
      db,
      keyring,
      logger,
      batchSize: run.batchSize,
      concurrency: run.concurrency,
      ratePerSecond: run.rate,
      onProgress: ({ done, total, rate }) => {
        const now = performance.now();
        if (now - shownAt < 5_000) return;
        shownAt = now;
        process.stderr.write(`    ${done}/${total} rows, ${Math.round(rate)} rows/s\n`);
      },
    });
    const cpuBefore = process.cpuUsage();
    report = await job.run(target);
    const cpu = process.cpuUsage(cpuBefore);
    cpuMs = (cpu.user + cpu.system) / 1000;
  } else {
    // Timed from the fork: each process's start-up (tsx, SDK, pool) is part of the run, as it is
    // for an operator starting N processes.
    const started = performance.now();
    const outputs = await Promise.all(
      Array.from({ length: workers }, () =>
        runRewrapChild({
          databaseUrl: run.url,
          endpoint: kms.endpoint,
          region: kms.region,
          source,
          target,
          concurrency: run.concurrency,
          rate: run.rate,
          batchSize: run.batchSize,
        }),
      ),
    );
    const seconds = (performance.now() - started) / 1000;
    const left = await createRewrapJob({
      db,
      keyring,
      logger,
      batchSize: 1,
      concurrency: 1,
      ratePerSecond: 1,
    }).plan(target);
    report = {
      seconds,
      rewrapped: outputs.reduce((n, o) => n + o.rewrapped, 0),
      retries: outputs.reduce((n, o) => n + o.retries, 0),
      remaining: left.users + (left.pepper ? 1 : 0),
    };
    cpuMs = outputs.reduce((n, o) => n + o.cpuMs, 0);
  }
  const status = await readKeyStatus(db);
  if (status.users.get(target) !== users || status.pepperKeyId !== target || report.remaining !== 0) {
    throw new Error(`rewrap incomplete: ${JSON.stringify({ ...report, users: [...status.users] })}`);
  }
  const rowsDone = report.rewrapped;
  return {
    users,
    workers,
    seconds: report.seconds,
    rowsPerSecond: rowsDone / report.seconds,
    cpuMsPerRow: cpuMs / rowsDone,
    reEncryptCalls: await kms.call<number>({ op: "count", name: "ReEncrypt" }),
    retries: report.retries,
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      users: { type: "string", default: "10000,100000" },
      "latency-ms": { type: "string", default: "5" },
      concurrency: { type: "string", default: "32" },
      rate: { type: "string", default: "5000" },
      "batch-size": { type: "string", default: "500" },
      // Worker counts, each timed in turn on the same seeded rows (1,2: one then two processes).
      workers: { type: "string", default: "1" },
      "database-url": { type: "string" },
      // One JSON line of results on stdout instead of the table (bench/run.ts reads it).
      json: { type: "boolean", default: false },
    },
  });
  const sizes = (values.users ?? "").split(",").map(Number);
  const workerCounts = (values.workers ?? "").split(",").map(Number);
  const options = {
    latencyMs: Number(values["latency-ms"]),
    concurrency: Number(values.concurrency),
    rate: Number(values.rate),
    batchSize: Number(values["batch-size"]),
  };
  const numbers = [...sizes, ...workerCounts, ...Object.values(options)];
  if (
    numbers.some((n) => !(Number.isFinite(n) && n >= 0)) ||
    [...sizes, ...workerCounts].some((n) => !Number.isInteger(n) || n < 1)
  ) {
    process.stderr.write(
      "usage: rewrap-bench.ts --users N[,N...] --latency-ms N [--workers N[,N...]] [--concurrency N --rate N]\n",
    );
    process.exitCode = 2;
    return;
  }
  const adminUrl =
    values["database-url"] ??
    process.env.TEST_DATABASE_URL ??
    process.env.DATABASE_URL ??
    "postgres://postgres@127.0.0.1:5432/postgres";

  const kms = await startKmsChild(import.meta.url);
  const results: Result[] = [];
  try {
    process.stderr.write(
      `rewrap bench: KMS latency ${options.latencyMs} ms, concurrency ${options.concurrency} per worker, ` +
        `rate ${options.rate}/s in total, batch ${options.batchSize}, worker process(es) ${workerCounts.join(" then ")}\n`,
    );
    for (const users of sizes) {
      process.stderr.write(`${users} users:\n`);
      results.push(...(await measure(kms, adminUrl, users, workerCounts, options)));
    }
  } finally {
    kms.stop();
  }
  if (values.json === true) {
    console.log(JSON.stringify({ options: { ...options, workers: workerCounts }, results }));
    return;
  }
  console.log("users\tworkers\tseconds\trows/s\tCPU ms/row\tReEncrypt calls\tretries");
  for (const r of results) {
    console.log(
      `${r.users}\t${r.workers}\t${r.seconds.toFixed(1)}\t${Math.round(r.rowsPerSecond)}\t${r.cpuMsPerRow.toFixed(3)}\t${r.reEncryptCalls}\t${r.retries}`,
    );
  }
  // Linearity: the smallest and the largest size with the same worker count.
  for (const workers of workerCounts) {
    const same = results.filter((r) => r.workers === workers);
    const first = same[0];
    const last = same.at(-1);
    if (first !== undefined && last !== undefined && last !== first) {
      const ratio = last.seconds / last.users / (first.seconds / first.users);
      console.log(
        `${workers} worker(s): time per row at ${last.users} vs ${first.users} users: ×${ratio.toFixed(2)} (1.00 = linear)`,
      );
    }
  }
}

if (process.argv.includes("--rewrap-child")) await serveRewrapChild();
else if (!(await serveKmsIfChild())) await main();
