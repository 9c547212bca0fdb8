/**
 * `npx tsx bench/soak.ts --minutes N [--rate R] [--users U]` — a long run at a fixed rate.
 *
 * Starts `keybroker serve` as a separate process on Postgres (bench/lib/broker-process.ts) and
 * drives an open-loop mix from U users at R calls/s for N minutes: PutSecret (new secrets,
 * then new versions of them), ListSecrets and ProxyService.Call against the HTTPS upstream.
 * Every ~10 s it prints throughput, errors by gRPC code, p50/p99 and the broker's RSS; at the
 * end a summary, also written to bench/results/soak-<date>.json. It exits 1 if any call failed
 * (anything but OK is unexpected on a healthy system) or an acknowledged write was lost.
 *
 * Database: BENCH_DATABASE_URL (an admin URL; a throwaway database is created and dropped on
 * it), else a Postgres cluster the soak starts and deletes itself (test/support/owned-postgres).
 */
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { setTimeout as delay } from "node:timers/promises";
import { parseArgs } from "node:util";
import { status } from "@grpc/grpc-js";
import { asServiceError, createGrpcClients, unary, type WireMessage } from "../test/support/grpc-client.js";
import { type OwnedPostgres, startOwnedPostgres } from "../test/support/owned-postgres.js";
import type { BrokerProcess } from "./lib/broker-process.js";
import { processCpuMicros, processRssMiB } from "./lib/process-cpu.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string" },
    rate: { type: "string", default: "50" },
    users: { type: "string", default: "4" },
  },
});
const minutes = Number(values.minutes);
const rate = Number(values.rate);
const userCount = Number(values.users);
if (!(minutes > 0) || !(rate > 0 && rate <= 5000) || !(Number.isInteger(userCount) && userCount >= 1)) {
  console.error(
    "usage: tsx bench/soak.ts --minutes N [--rate R (calls/s, default 50)] [--users U (default 4)]",
  );
  process.exit(2);
}

const REPORT_EVERY_MS = 10_000;
const DEADLINE_MS = 5_000;
/** Open loop, but bounded: past this many calls in flight new ones are counted as shed, not sent. */
const MAX_IN_FLIGHT = 1_000;
/** Secrets each user creates before PutSecret switches to new versions of existing ones (limit 1000). */
const SECRETS_PER_USER = 50;
const MIX = [
  { method: "PutSecret", weight: 0.2 },
  { method: "ListSecrets", weight: 0.4 },
  { method: "Call", weight: 0.4 },
] as const;
type Method = (typeof MIX)[number]["method"];

interface User {
  readonly token: string;
  readonly proxySecretId: string;
  /** Acknowledged writes: secret id → highest version the broker said it stored. */
  readonly acknowledged: Map<string, number>;
  /** Labels used so far (a failed create uses one up too). */
  created: number;
}

interface Window {
  calls: number;
  ok: number;
  byCode: Record<string, number>;
  latencies: number[];
}

const newWindow = (): Window => ({ calls: 0, ok: 0, byCode: {}, latencies: [] });
const codeName = (code: number): string => status[code] ?? String(code);
const quantile = (sorted: readonly number[], q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
const round = (n: number, digits = 1): number => Number(n.toFixed(digits));

let cluster: OwnedPostgres | undefined;
if (process.env.BENCH_DATABASE_URL === undefined) {
  cluster = await startOwnedPostgres();
  // broker-process.ts reads its admin URL when first imported: set it before the import below.
  process.env.BENCH_DATABASE_URL = cluster.url();
}
const { startBrokerProcess } = await import("./lib/broker-process.js");
const compiled = existsSync(new URL("../dist/src/cli/main.js", import.meta.url));

let broker: BrokerProcess | undefined;
try {
  // LOG_LEVEL stays "info": broker-process finds the ports in the start-up line, and info logs
  // nothing per call.
  broker = await startBrokerProcess({ database: "postgres" });
  process.exitCode = await soak(broker);
} finally {
  await broker?.stop();
  await cluster?.destroy();
}

async function soak(broker: BrokerProcess): Promise<number> {
  const clients = createGrpcClients(broker.grpcAddress);
  const auth = (user: User) => ({
    callerKey: broker.callerKey,
    bearerToken: user.token,
    deadlineMs: DEADLINE_MS,
  });
  const tokenLifetimeSec = Math.ceil(minutes * 60) + 600;

  const users: User[] = [];
  for (let i = 0; i < userCount; i++) {
    const token = await broker.issuer.sign(
      { sub: `google-oauth2|soak-${i}` },
      { expiresInSec: tokenLifetimeSec },
    );
    const put = await unary(
      clients.secrets,
      "PutSecret",
      { provider: "bench-upstream", label: "proxied", fields: { token: broker.upstreamCredentials.bearer } },
      { callerKey: broker.callerKey, bearerToken: token },
    );
    const secret = put.response.secret as WireMessage;
    users.push({
      token,
      proxySecretId: String(secret.id),
      acknowledged: new Map([[String(secret.id), Number(secret.version)]]),
      created: 1,
    });
  }

  const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)] as T;
  function chooseMethod(): Method {
    let r = Math.random();
    for (const entry of MIX) {
      r -= entry.weight;
      if (r < 0) return entry.method;
    }
    return "ListSecrets";
  }

  function callFor(method: Method, user: User): Promise<unknown> {
    switch (method) {
      case "PutSecret": {
        const fields = { token: `${broker.upstreamCredentials.bearer}-${Date.now()}` };
        const existing = [...user.acknowledged.keys()].filter((id) => id !== user.proxySecretId);
        const create = user.created < SECRETS_PER_USER || existing.length === 0;
        const request = create
          ? { provider: "bench-upstream", label: `soak-${user.created++}`, fields }
          : { provider: "bench-upstream", secretId: pick(existing), fields };
        return unary(clients.secrets, "PutSecret", request, auth(user)).then(({ response }) => {
          const secret = response.secret as WireMessage;
          const id = String(secret.id);
          user.acknowledged.set(id, Math.max(user.acknowledged.get(id) ?? 0, Number(secret.version)));
          acknowledgedPuts += 1;
        });
      }
      case "ListSecrets":
        return unary(clients.secrets, "ListSecrets", {}, auth(user));
      case "Call":
        return unary(
          clients.proxy,
          "Call",
          { secretId: user.proxySecretId, method: "GET", path: "/ok" },
          auth(user),
        );
    }
  }

  let acknowledgedPuts = 0;
  const total = newWindow();
  const byMethod: Record<string, Record<string, number>> = {};
  const allLatencies: number[] = [];
  let window = newWindow();
  let inFlight = 0;
  let shed = 0;
  const pending = new Set<Promise<void>>();

  function record(method: Method, code: number, ms: number): void {
    const name = codeName(code);
    for (const w of [window, total]) {
      w.calls += 1;
      if (code === status.OK) w.ok += 1;
      w.byCode[name] = (w.byCode[name] ?? 0) + 1;
    }
    window.latencies.push(ms);
    if (allLatencies.length < 5_000_000) allLatencies.push(ms);
    byMethod[method] ??= {};
    const counts = byMethod[method];
    counts[name] = (counts[name] ?? 0) + 1;
  }

  function issue(): void {
    if (inFlight >= MAX_IN_FLIGHT) {
      shed += 1;
      return;
    }
    const method = chooseMethod();
    const user = pick(users);
    const started = performance.now();
    inFlight += 1;
    const done = callFor(method, user).then(
      () => record(method, status.OK, performance.now() - started),
      (err: unknown) => record(method, asServiceError(err).code, performance.now() - started),
    );
    const tracked = done.finally(() => {
      inFlight -= 1;
      pending.delete(tracked);
    });
    pending.add(tracked);
  }

  interface Sample {
    atSec: number;
    callsPerSecond: number;
    errors: Record<string, number>;
    p50Ms: number;
    p99Ms: number;
    rssMiB: number;
    brokerCpuPercent: number;
    inFlight: number;
    /** The machine's 1-minute load average: other work on the host skews every other figure. */
    loadAvg1m: number;
  }
  const samples: Sample[] = [];
  const startedAt = Date.now();
  const endAt = startedAt + minutes * 60_000;
  let lastReport = startedAt;
  let lastCpu = processCpuMicros(broker.pid);

  function report(): void {
    const now = Date.now();
    const seconds = (now - lastReport) / 1000;
    const cpu = processCpuMicros(broker.pid);
    const sorted = [...window.latencies].sort((a, b) => a - b);
    const errors = Object.fromEntries(Object.entries(window.byCode).filter(([code]) => code !== "OK"));
    const sample: Sample = {
      atSec: round((now - startedAt) / 1000, 0),
      callsPerSecond: round(window.calls / seconds),
      errors,
      p50Ms: round(quantile(sorted, 0.5), 2),
      p99Ms: round(quantile(sorted, 0.99), 2),
      rssMiB: round(processRssMiB(broker.pid)),
      brokerCpuPercent: round(((cpu - lastCpu) / 1e6 / seconds) * 100),
      inFlight,
      loadAvg1m: round(loadavg()[0] ?? 0, 2),
    };
    samples.push(sample);
    console.log(
      `[${String(sample.atSec).padStart(5)} s] ${sample.callsPerSecond} calls/s  ` +
        `errors ${JSON.stringify(errors)}  p50 ${sample.p50Ms} ms  p99 ${sample.p99Ms} ms  ` +
        `broker RSS ${sample.rssMiB} MiB  CPU ${sample.brokerCpuPercent}%  in flight ${inFlight}  ` +
        `load ${sample.loadAvg1m}`,
    );
    window = newWindow();
    lastReport = now;
    lastCpu = cpu;
  }

  console.log(
    `soak: ${minutes} min at ${rate} calls/s from ${userCount} users, broker pid ${broker.pid} ` +
      `(${compiled ? "compiled dist/: run `npm run build` first if src/ changed" : "sources via tsx"}), ` +
      `database ${cluster === undefined ? "BENCH_DATABASE_URL" : "an owned Postgres cluster"}`,
  );
  // Fixed rate against the clock, so a slow call never slows the schedule (open loop).
  const intervalMs = 1000 / rate;
  let issued = 0;
  while (Date.now() < endAt) {
    const due = Math.floor((Date.now() - startedAt) / intervalMs);
    for (; issued < due; issued++) issue();
    if (Date.now() - lastReport >= REPORT_EVERY_MS) report();
    await delay(Math.max(1, Math.min(20, intervalMs)));
  }
  await Promise.race([Promise.all(pending), delay(DEADLINE_MS * 2)]);
  report();

  // Lost writes: every acknowledged PutSecret must be listed, at least at its acknowledged version.
  let lostWrites = 0;
  let checkedSecrets = 0;
  for (const user of users) {
    const { response } = await unary(clients.secrets, "ListSecrets", {}, auth(user));
    const listed = new Map(
      ((response.secrets as WireMessage[] | undefined) ?? []).map((s) => [String(s.id), Number(s.version)]),
    );
    for (const [id, version] of user.acknowledged) {
      checkedSecrets += 1;
      if ((listed.get(id) ?? 0) < version) lostWrites += 1;
    }
  }
  clients.close();

  allLatencies.sort((a, b) => a - b);
  const unexpectedErrors = total.calls - total.ok;
  const first = samples[0];
  const last = samples.at(-1);
  const summary = {
    date: new Date(startedAt).toISOString(),
    command: `npx tsx bench/soak.ts --minutes ${minutes} --rate ${rate} --users ${userCount}`,
    minutes,
    rate,
    users: userCount,
    brokerEntry: compiled ? "dist" : "tsx",
    database: cluster === undefined ? "BENCH_DATABASE_URL" : "owned cluster",
    totalCalls: total.calls,
    achievedCallsPerSecond: round(total.calls / ((Date.now() - startedAt) / 1000)),
    byCode: total.byCode,
    byMethod,
    unexpectedErrors,
    shedByClient: shed,
    acknowledgedPuts,
    secretsChecked: checkedSecrets,
    lostWrites,
    p50Ms: round(quantile(allLatencies, 0.5), 2),
    p99Ms: round(quantile(allLatencies, 0.99), 2),
    rssFirstMiB: first?.rssMiB,
    rssLastMiB: last?.rssMiB,
    rssMaxMiB: Math.max(...samples.map((s) => s.rssMiB)),
    samples,
  };
  const { samples: _samples, byMethod: _byMethod, ...headline } = summary;
  console.log(`\nsummary ${JSON.stringify(headline, null, 2)}`);
  const dir = new URL("./results/", import.meta.url);
  await mkdir(dir, { recursive: true });
  const file = new URL(`soak-${summary.date.replaceAll(":", "-").replace(/\.\d+Z$/, "Z")}.json`, dir);
  await writeFile(file, `${JSON.stringify(summary, null, 2)}\n`);
  console.log(`written to ${file.pathname}`);
  return unexpectedErrors === 0 && lostWrites === 0 && shed === 0 ? 0 : 1;
}
