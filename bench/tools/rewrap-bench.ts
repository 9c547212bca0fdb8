/**
 * Times the online rewrap job (SPEC I9) on Postgres against the local KMS server with
 * injected latency, for one or more table sizes:
 *
 *   npx tsx bench/tools/rewrap-bench.ts --users 10000,100000 --latency-ms 5 [--concurrency 32]
 *     [--rate 5000] [--batch-size 500] [--database-url postgres://postgres@127.0.0.1:5432/postgres] [--json]
 *
 * The KMS server runs in a child process (as a real KMS is remote: its CPU is not ours).
 * Seeding is not timed: each user gets a real data key from GenerateDataKey under its own
 * encryption context at 0 ms latency, bulk-inserted; then latency is switched on and the
 * rewrap from key A to key B is timed. Each size uses a fresh throwaway database.
 */
import { type ChildProcess, fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { sql } from "kysely";
import { createAwsKmsKeyring, createKmsClient } from "../../src/keys/aws-kms-keyring.js";
import { loadOrCreatePepper } from "../../src/keys/pepper.js";
import { userKeyContext } from "../../src/keys/user-data-keys.js";
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { readKeyStatus } from "../../src/rotation/key-status.js";
import { createRewrapJob } from "../../src/rotation/rewrap-job.js";
import { openDatabase } from "../../src/store/database.js";
import { migrateToLatest } from "../../src/store/migrate.js";
import { startLocalKmsServer } from "../../test/support/local-kms-server.js";
import { createThrowawayDatabase } from "../../test/support/throwaway-database.js";

type KmsRequest =
  | { op: "createKey" }
  | { op: "setLatency"; ms: number }
  | { op: "count"; name: string }
  | { op: "resetCounts" };

// ---- the child: a local KMS server driven over IPC ----------------------------------------

async function serveKms(): Promise<void> {
  const server = await startLocalKmsServer();
  process.on("message", (message: { id: number } & KmsRequest) => {
    let result: unknown = null;
    if (message.op === "createKey") result = server.createKey("rewrap bench");
    else if (message.op === "setLatency") server.setFaults({ latencyMs: message.ms });
    else if (message.op === "count") result = server.callCount(message.name);
    else server.resetCounts();
    process.send?.({ id: message.id, result });
  });
  process.on("disconnect", () => {
    void server.close().then(() => process.exit(0));
  });
  process.send?.({ id: 0, result: { endpoint: server.endpoint, region: server.region } });
}

interface KmsChild {
  readonly endpoint: string;
  readonly region: string;
  call<T>(request: KmsRequest): Promise<T>;
  stop(): void;
}

async function startKmsChild(): Promise<KmsChild> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ["--kms-child"], { stdio: "inherit" });
  const pending = new Map<number, (result: unknown) => void>();
  let nextId = 1;
  const ready = new Promise<{ endpoint: string; region: string }>((resolve, reject) => {
    pending.set(0, (result) => resolve(result as { endpoint: string; region: string }));
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`KMS child exited with ${code}`)));
  });
  child.on("message", (message: { id: number; result: unknown }) => {
    pending.get(message.id)?.(message.result);
    pending.delete(message.id);
  });
  const { endpoint, region } = await ready;
  return {
    endpoint,
    region,
    call<T>(request: KmsRequest) {
      const id = nextId++;
      return new Promise<T>((resolve) => {
        pending.set(id, (result) => resolve(result as T));
        child.send({ id, ...request });
      });
    },
    stop: () => child.disconnect(),
  };
}

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

interface Result {
  readonly users: number;
  readonly seconds: number;
  readonly rowsPerSecond: number;
  readonly cpuMsPerRow: number;
  readonly reEncryptCalls: number;
  readonly retries: number;
}

async function measure(
  kms: KmsChild,
  adminUrl: string,
  users: number,
  options: { latencyMs: number; concurrency: number; rate: number; batchSize: number },
): Promise<Result> {
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
    const source = await kms.call<string>({ op: "createKey" });
    const target = await kms.call<string>({ op: "createKey" });
    const keyring = createAwsKmsKeyring({ client, keyId: source });
    (await loadOrCreatePepper(database.db, keyring)).fill(0);

    const seedStart = performance.now();
    const refs = Array.from({ length: users }, () => randomBytes(32));
    const rows: Array<{ user_ref: Buffer; wrapped_data_key: Uint8Array; master_key_id: string }> = [];
    await forEachConcurrently(refs, 64, async (ref) => {
      const generated = await keyring.generateDataKey(userKeyContext(ref));
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

    await kms.call({ op: "setLatency", ms: options.latencyMs });
    await kms.call({ op: "resetCounts" });
    let shownAt = 0;
    const job = createRewrapJob({
      db: database.db,
      keyring,
      logger,
      batchSize: options.batchSize,
      concurrency: options.concurrency,
      ratePerSecond: options.rate,
      onProgress: ({ done, total, rate }) => {
        const now = performance.now();
        if (now - shownAt < 5_000) return;
        shownAt = now;
        process.stderr.write(`  ${done}/${total} rows, ${Math.round(rate)} rows/s\n`);
      },
    });
    const cpuBefore = process.cpuUsage();
    const report = await job.run(target);
    const cpu = process.cpuUsage(cpuBefore);
    const status = await readKeyStatus(database.db);
    if (status.users.get(target) !== users || status.pepperKeyId !== target || report.remaining !== 0) {
      throw new Error(`rewrap incomplete: ${JSON.stringify({ ...report, users: [...status.users] })}`);
    }
    const rowsDone = report.rewrapped;
    return {
      users,
      seconds: report.seconds,
      rowsPerSecond: rowsDone / report.seconds,
      cpuMsPerRow: (cpu.user + cpu.system) / 1000 / rowsDone,
      reEncryptCalls: await kms.call<number>({ op: "count", name: "ReEncrypt" }),
      retries: report.retries,
    };
  } finally {
    client.destroy();
    await database.close();
    await throwaway.drop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      users: { type: "string", default: "10000,100000" },
      "latency-ms": { type: "string", default: "5" },
      concurrency: { type: "string", default: "32" },
      rate: { type: "string", default: "5000" },
      "batch-size": { type: "string", default: "500" },
      "database-url": { type: "string" },
      // One JSON line of results on stdout instead of the table (bench/run.ts reads it).
      json: { type: "boolean", default: false },
    },
  });
  const sizes = (values.users ?? "").split(",").map(Number);
  const options = {
    latencyMs: Number(values["latency-ms"]),
    concurrency: Number(values.concurrency),
    rate: Number(values.rate),
    batchSize: Number(values["batch-size"]),
  };
  const numbers = [...sizes, ...Object.values(options)];
  if (
    numbers.some((n) => !(Number.isFinite(n) && n >= 0)) ||
    sizes.some((n) => !Number.isInteger(n) || n < 1)
  ) {
    process.stderr.write(
      "usage: rewrap-bench.ts --users N[,N...] --latency-ms N [--concurrency N --rate N]\n",
    );
    process.exitCode = 2;
    return;
  }
  const adminUrl =
    values["database-url"] ??
    process.env.TEST_DATABASE_URL ??
    process.env.DATABASE_URL ??
    "postgres://postgres@127.0.0.1:5432/postgres";

  const kms = await startKmsChild();
  const results: Result[] = [];
  try {
    process.stderr.write(
      `rewrap bench: KMS latency ${options.latencyMs} ms, concurrency ${options.concurrency}, ` +
        `rate ${options.rate}/s, batch ${options.batchSize}\n`,
    );
    for (const users of sizes) {
      process.stderr.write(`${users} users:\n`);
      results.push(await measure(kms, adminUrl, users, options));
    }
  } finally {
    kms.stop();
  }
  if (values.json === true) {
    console.log(JSON.stringify({ options, results }));
    return;
  }
  console.log("users\tseconds\trows/s\tCPU ms/row\tReEncrypt calls\tretries");
  for (const r of results) {
    console.log(
      `${r.users}\t${r.seconds.toFixed(1)}\t${Math.round(r.rowsPerSecond)}\t${r.cpuMsPerRow.toFixed(3)}\t${r.reEncryptCalls}\t${r.retries}`,
    );
  }
  const first = results[0];
  const last = results.at(-1);
  if (first !== undefined && last !== undefined && last !== first) {
    const ratio = last.seconds / last.users / (first.seconds / first.users);
    console.log(
      `time per row at ${last.users} vs ${first.users} users: ×${ratio.toFixed(2)} (1.00 = linear)`,
    );
  }
}

if (process.argv.includes("--kms-child")) await serveKms();
else await main();
