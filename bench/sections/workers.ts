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
  const samples = new Map<number, { rate: number[]; cpu: number[]; p50: number[]; errors: number }>();
  try {
    for (const workers of [1, 2]) {
      options.progress(`workers: starting serve --workers ${workers}`);
      targets.push(await prepare(workers));
      samples.set(workers, { rate: [], cpu: [], p50: [], errors: 0 });
    }
    for (const t of targets) await runLoad(200, CONCURRENCY, t.call); // warm-up: JIT, caches, pools
    for (let round = 0; round < rounds; round++) {
      for (const t of targets) {
        options.progress(`workers: round ${round + 1}/${rounds}, --workers ${t.workers}`);
        const before = treeCpuMicros(t.broker.pid);
        const load = await runLoad(callsPerRound, CONCURRENCY, t.call);
        const cpu = treeCpuMicros(t.broker.pid) - before;
        const s = samples.get(t.workers);
        if (s === undefined) continue;
        s.rate.push(load.callsPerSecond);
        s.cpu.push(cpu / load.calls);
        s.p50.push(load.p50Ms);
        s.errors += load.errors;
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
          "every call's `started` audit row is chained on the one chain head (compare-and-set per batch); with two workers each batch finds the head moved by the other and re-chains under the head's row lock",
        ],
      },
    ],
    checks: [],
    errors: (one?.errors ?? 0) + (two?.errors ?? 0),
    data: { rounds, callsPerRound, one, two, ratio },
  };
}
