/**
 * Issue 17 item 3: throughput of `serve --workers 1` vs `--workers 2` on Postgres, ProxyService.Call
 * at concurrency 64 over 8 connections (the cluster primary hands connections, not calls, to
 * workers), rounds interleaved, medians. CPU per call is the broker's whole process tree (primary
 * and workers) from /proc. On a 2-core machine the load generator, Postgres, the upstream and the
 * KMS server share the same two cores as the workers: read the ratio, not the absolute numbers.
 */
import { readFileSync } from "node:fs";
import {
  createGrpcClients,
  type GrpcClients,
  unary,
  type WireMessage,
} from "../../test/support/grpc-client.js";
import { type BrokerProcess, startBrokerProcess } from "../lib/broker-process.js";
import { runLoad } from "../lib/load.js";
import { processCpuMicros } from "../lib/process-cpu.js";
import { fmt, median, type SectionOptions, type SectionResult } from "../lib/report.js";

const CONNECTIONS = 8;
const CONCURRENCY = 64;

/** The pid and every descendant (the cluster's workers), from /proc/<pid>/task/<pid>/children. */
function processTree(pid: number): number[] {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [pid];
  }
  return [pid, ...children.flatMap(processTree)];
}

function treeCpuMicros(pid: number): number {
  let total = 0;
  for (const p of processTree(pid)) {
    try {
      total += processCpuMicros(p);
    } catch {
      // a process that ended between listing and reading
    }
  }
  return total;
}

/** The audit batches so far by how they reached the chain head, and the rows (from /metrics). */
interface AuditCounts {
  readonly optimistic: number;
  readonly headMoved: number;
  readonly locked: number;
  readonly rows: number;
  /** Seconds spent in committed appends, all paths, all workers. */
  readonly seconds: number;
}

async function auditCounts(metricsUrl: string): Promise<AuditCounts> {
  const text = await (await fetch(metricsUrl)).text();
  const value = (pattern: RegExp) => Number(pattern.exec(text)?.[1] ?? 0);
  return {
    optimistic: value(/^keybroker_audit_batch_seconds_count\{path="optimistic"\} (\S+)$/m),
    headMoved: value(/^keybroker_audit_batch_seconds_count\{path="head_moved"\} (\S+)$/m),
    locked: value(/^keybroker_audit_batch_seconds_count\{path="locked"\} (\S+)$/m),
    rows: value(/^keybroker_audit_rows_total (\S+)$/m),
    seconds: [...text.matchAll(/^keybroker_audit_batch_seconds_sum\{path="[a-z_]+"\} (\S+)$/gm)].reduce(
      (n, m) => n + Number(m[1]),
      0,
    ),
  };
}

interface Target {
  readonly workers: number;
  readonly broker: BrokerProcess;
  readonly clients: GrpcClients[];
  readonly call: () => Promise<unknown>;
}

async function prepare(workers: number): Promise<Target> {
  const broker = await startBrokerProcess({ database: "postgres", workers });
  const clients: GrpcClients[] = [];
  const calls: Array<() => Promise<unknown>> = [];
  for (let i = 0; i < CONNECTIONS; i++) {
    const grpc = createGrpcClients(broker.grpcAddress, broker.grpcAddress, {
      "grpc.use_local_subchannel_pool": 1,
      "bench.connection": i,
    });
    clients.push(grpc);
    const token = await broker.issuer.sign({ sub: `auth0|workers-bench-${i}` }, { expiresInSec: 3600 });
    const auth = { callerKey: broker.callerKey, bearerToken: token };
    const put = await unary(
      grpc.secrets,
      "PutSecret",
      { provider: "bench-upstream", label: "bench", fields: { token: broker.upstreamCredentials.bearer } },
      auth,
    );
    const secretId = (put.response.secret as WireMessage).id as string;
    calls.push(() => unary(grpc.proxy, "Call", { secretId, method: "GET", path: "/ok" }, auth));
  }
  let next = 0;
  return { workers, broker, clients, call: () => (calls[next++ % calls.length] as () => Promise<unknown>)() };
}

export async function runWorkers(options: SectionOptions): Promise<SectionResult> {
  const rounds = options.quick ? 2 : 5;
  const callsPerRound = options.quick ? 1_000 : 4_000;
  const targets: Target[] = [];
  const samples = new Map<
    number,
    { rate: number[]; cpu: number[]; p50: number[]; errors: number; audit: AuditCounts[]; wall: number[] }
  >();
  try {
    for (const workers of [1, 2]) {
      options.progress(`workers: starting serve --workers ${workers}`);
      targets.push(await prepare(workers));
      samples.set(workers, { rate: [], cpu: [], p50: [], errors: 0, audit: [], wall: [] });
    }
    for (const t of targets) await runLoad(200, CONCURRENCY, t.call); // warm-up: JIT, caches, pools
    for (let round = 0; round < rounds; round++) {
      for (const t of targets) {
        options.progress(`workers: round ${round + 1}/${rounds}, --workers ${t.workers}`);
        const auditBefore = await auditCounts(t.broker.metricsUrl);
        const before = treeCpuMicros(t.broker.pid);
        const load = await runLoad(callsPerRound, CONCURRENCY, t.call);
        const cpu = treeCpuMicros(t.broker.pid) - before;
        const auditAfter = await auditCounts(t.broker.metricsUrl);
        const s = samples.get(t.workers);
        if (s === undefined) continue;
        s.rate.push(load.callsPerSecond);
        s.cpu.push(cpu / load.calls);
        s.p50.push(load.p50Ms);
        s.errors += load.errors;
        s.audit.push({
          optimistic: auditAfter.optimistic - auditBefore.optimistic,
          headMoved: auditAfter.headMoved - auditBefore.headMoved,
          locked: auditAfter.locked - auditBefore.locked,
          rows: auditAfter.rows - auditBefore.rows,
          seconds: auditAfter.seconds - auditBefore.seconds,
        });
        s.wall.push(load.calls / load.callsPerSecond);
      }
    }
  } finally {
    for (const t of targets) {
      for (const c of t.clients) c.close();
      await t.broker.stop();
    }
  }
  const one = samples.get(1);
  const two = samples.get(2);
  const row = (workers: number, s: typeof one) => [
    workers,
    fmt(median(s?.rate ?? [])),
    fmt(median(s?.p50 ?? []), 2),
    fmt(median(s?.cpu ?? [])),
  ];
  const ratio = median(two?.rate ?? []) / median(one?.rate ?? []);
  // The chain head's contention: of all batches in the measured rounds, how many found it moved
  // by the other worker (optimistic try wasted, then BEGIN, lock, append, COMMIT).
  const contention = (workers: number, s: typeof one) => {
    const total = (s?.audit ?? []).reduce(
      (a, r) => ({
        optimistic: a.optimistic + r.optimistic,
        headMoved: a.headMoved + r.headMoved,
        locked: a.locked + r.locked,
        rows: a.rows + r.rows,
        seconds: a.seconds + r.seconds,
      }),
      { optimistic: 0, headMoved: 0, locked: 0, rows: 0, seconds: 0 },
    );
    const wall = (s?.wall ?? []).reduce((n, w) => n + w, 0);
    const batches = total.optimistic + total.headMoved + total.locked;
    const calls = rounds * callsPerRound;
    // One statement for an optimistic batch; five (try, BEGIN, lock, append, COMMIT) after a move.
    const statements = total.optimistic + 5 * total.headMoved + 4 * total.locked;
    return {
      workers,
      batches,
      headMovedShare: batches === 0 ? 0 : total.headMoved / batches,
      rowsPerBatch: batches === 0 ? 0 : total.rows / batches,
      statementsPerCall: statements / calls,
      // Each worker has at most one batch in flight: 100% means its appender never rests.
      appenderBusy: wall === 0 ? 0 : total.seconds / (wall * workers),
    };
  };
  const chain = [contention(1, one), contention(2, two)];
  return {
    id: "workers",
    title: "Every core: serve --workers 1 vs 2 (ProxyService.Call, grpc-js, Postgres)",
    tables: [
      {
        title: `ProxyService.Call at concurrency ${CONCURRENCY} over ${CONNECTIONS} connections, ${rounds} interleaved rounds of ${callsPerRound} calls (medians)`,
        columns: ["workers", "calls/s", "p50 ms", "broker CPU µs/call (all processes)"],
        rows: [row(1, one), row(2, two), ["2 vs 1", `×${fmt(ratio, 2)}`, "", ""]],
        notes: [
          "one machine: the load generator, Postgres, the HTTPS upstream and the KMS server run on the same cores as the workers, so two workers cannot get two free cores; the ratio is a lower bound of what a dedicated host gets",
          "every call's `started` audit row is chained on the one chain head (compare-and-set per batch); with two workers a batch that finds the head moved by the other re-chains under the head's row lock: the next table measures how often",
        ],
      },
      {
        title:
          "the audit chain head under two workers (all measured rounds, from keybroker_audit_batch_seconds{path})",
        columns: [
          "workers",
          "batches",
          "found the head moved",
          "rows per batch",
          "audit statements per call",
          "appender busy (per worker)",
        ],
        rows: chain.map((c) => [
          c.workers,
          c.batches,
          `${fmt(c.headMovedShare * 100, 1)}%`,
          fmt(c.rowsPerBatch, 1),
          fmt(c.statementsPerCall, 2),
          `${fmt(c.appenderBusy * 100, 0)}%`,
        ]),
        notes: [
          "a batch that found the head moved costs five statements (the optimistic try, then BEGIN, the head's row lock, the append, COMMIT) instead of one; each call has a `started` row and a deferred outcome row",
          "appender busy: time in committed appends over wall time, per worker (each has at most one batch in flight; rows that arrive meanwhile form the next batch, so a busy appender makes batches bigger rather than refusing calls)",
        ],
      },
    ],
    checks: [],
    errors: (one?.errors ?? 0) + (two?.errors ?? 0),
    data: { rounds, callsPerRound, one, two, ratio, chain },
  };
}
