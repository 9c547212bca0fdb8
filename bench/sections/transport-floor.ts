/**
 * Scenario 1: the transport floor (a bare echo on the broker's own server stack, bench/tools/echo-server.ts)
 * vs ListSecrets vs ProxyService.Call, on grpc-js and Connect, at concurrency 1 and 64. Rows are
 * interleaved (echo, list, call, echo, ...) and repeated, so a machine that drifts during the run
 * shifts every row alike and the ratios hold; CPU is read from /proc for the serving process only.
 */

import type { BareProxyProcess } from "../lib/bare-proxy-process.js";
import type { BrokerProcess } from "../lib/broker-process.js";
import type { EchoProcess } from "../lib/echo-process.js";
import { runLoad } from "../lib/load.js";
import { processCpuMicros } from "../lib/process-cpu.js";
import { fmt, median, type SectionOptions, type SectionResult, type TargetCheck } from "../lib/report.js";
import type { ScenarioCalls } from "../lib/scenarios.js";

interface Row {
  readonly scenario: string;
  readonly transport: "grpc-js" | "connect-node";
  readonly concurrency: number;
  readonly callsPerSecond: number;
  readonly cpuMicrosPerCall: number;
  readonly ratioToEcho: number;
  /** CPU per call over the bare proxy's (the same RPC and upstream request, nothing else). */
  readonly ratioToBare: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly transactionsPerCall: number;
  readonly errors: number;
}

interface Case {
  readonly scenario: string;
  readonly transport: Row["transport"];
  readonly pid: number;
  readonly call: () => Promise<unknown>;
  readonly broker: boolean;
  /** "echo" and "bare" are floors, served by their own processes. */
  readonly floor?: "echo" | "bare";
}

export async function runTransportFloor(
  broker: BrokerProcess,
  echo: EchoProcess,
  calls: ScenarioCalls,
  options: SectionOptions,
  bare?: BareProxyProcess,
): Promise<SectionResult> {
  const repeats = options.quick ? 1 : 3;
  const cases: Case[] = [
    {
      scenario: "echo (transport floor)",
      transport: "grpc-js",
      pid: echo.pid,
      call: echo.grpc,
      broker: false,
      floor: "echo",
    },
    ...(bare === undefined
      ? []
      : [
          {
            scenario: "bare proxy (floor)",
            transport: "grpc-js" as const,
            pid: bare.pid,
            call: calls.bare,
            broker: false,
            floor: "bare" as const,
          },
        ]),
    { scenario: "ListSecrets", transport: "grpc-js", pid: broker.pid, call: calls.list, broker: true },
    { scenario: "ProxyService.Call", transport: "grpc-js", pid: broker.pid, call: calls.proxy, broker: true },
    {
      scenario: "echo (transport floor)",
      transport: "connect-node",
      pid: echo.pid,
      call: echo.connect,
      broker: false,
      floor: "echo",
    },
    ...(bare === undefined
      ? []
      : [
          {
            scenario: "bare proxy (floor)",
            transport: "connect-node" as const,
            pid: bare.pid,
            call: calls.connectBare,
            broker: false,
            floor: "bare" as const,
          },
        ]),
    {
      scenario: "ListSecrets",
      transport: "connect-node",
      pid: broker.pid,
      call: calls.connectList,
      broker: true,
    },
    {
      scenario: "ProxyService.Call",
      transport: "connect-node",
      pid: broker.pid,
      call: calls.connectProxy,
      broker: true,
    },
  ];
  const rows: Row[] = [];
  for (const concurrency of [1, 64]) {
    // Fewer calls at concurrency 1, where each costs a full round trip of every hop.
    const perRun = options.quick ? 300 : concurrency === 1 ? 1000 : 3000;
    // V8 needs a few thousand calls to optimise a path; fewer inflates CPU per call.
    const warmup = options.quick ? 300 : 3000;
    for (const c of cases) await runLoad(warmup, Math.min(concurrency, 16), c.call);
    const samples = new Map<
      Case,
      Array<{ cpu: number; cps: number; p50: number; p99: number; errors: number }>
    >();
    const transactions = new Map<Case, number>();
    for (let repeat = 0; repeat < repeats; repeat++) {
      for (const c of cases) {
        options.progress(
          `transport floor: ${c.scenario} ${c.transport} c=${concurrency} run ${repeat + 1}/${repeats}`,
        );
        // Statements per call once per case (reading the counter costs a second's wait).
        const tx0 = repeat === 0 && c.broker ? await broker.committedTransactions() : undefined;
        const cpu0 = processCpuMicros(c.pid);
        const load = await runLoad(perRun, concurrency, c.call);
        const cpu = (processCpuMicros(c.pid) - cpu0) / perRun;
        if (tx0 !== undefined) {
          const tx1 = await broker.committedTransactions();
          if (tx1 !== undefined) transactions.set(c, (tx1 - tx0) / perRun);
        }
        const list = samples.get(c) ?? [];
        list.push({ cpu, cps: load.callsPerSecond, p50: load.p50Ms, p99: load.p99Ms, errors: load.errors });
        samples.set(c, list);
      }
    }
    const cpuOf = (c: Case) => median((samples.get(c) ?? []).map((s) => s.cpu));
    for (const c of cases) {
      const s = samples.get(c) ?? [];
      const floor = cases.find((f) => f.floor === "echo" && f.transport === c.transport);
      const bareFloor = cases.find((f) => f.floor === "bare" && f.transport === c.transport);
      rows.push({
        scenario: c.scenario,
        transport: c.transport,
        concurrency,
        callsPerSecond: median(s.map((x) => x.cps)),
        cpuMicrosPerCall: cpuOf(c),
        ratioToEcho: floor === undefined ? Number.NaN : cpuOf(c) / cpuOf(floor),
        ratioToBare: bareFloor === undefined ? Number.NaN : cpuOf(c) / cpuOf(bareFloor),
        p50Ms: median(s.map((x) => x.p50)),
        p99Ms: median(s.map((x) => x.p99)),
        transactionsPerCall: transactions.get(c) ?? Number.NaN,
        errors: s.reduce((n, x) => n + x.errors, 0),
      });
    }
  }

  const proxy = (transport: Row["transport"], concurrency: number) =>
    rows.find(
      (r) => r.scenario === "ProxyService.Call" && r.transport === transport && r.concurrency === concurrency,
    );
  const checks: TargetCheck[] = [];
  for (const concurrency of [64, 1]) {
    const grpc = proxy("grpc-js", concurrency);
    if (grpc !== undefined) {
      checks.push({
        target: `broker CPU ≤ 250 µs per cached ProxyService.Call (grpc-js, concurrency ${concurrency})`,
        measured: `${fmt(grpc.cpuMicrosPerCall)} µs`,
        met: grpc.cpuMicrosPerCall <= 250,
      });
    }
    for (const transport of ["grpc-js", "connect-node"] as const) {
      const row = proxy(transport, concurrency);
      if (row === undefined) continue;
      checks.push({
        target: `ProxyService.Call ≤ 2.5× the echo's CPU per call (${transport}, concurrency ${concurrency})`,
        measured: `×${fmt(row.ratioToEcho, 2)}`,
        met: row.ratioToEcho <= 2.5,
      });
    }
    // Issue 17 item 1: against what a proxied call physically is (grpc-js).
    const bareLimit = concurrency === 64 ? 1.5 : 2;
    if (grpc !== undefined && Number.isFinite(grpc.ratioToBare)) {
      checks.push({
        target: `ProxyService.Call ≤ ${bareLimit}× the bare proxy's CPU per call (grpc-js, concurrency ${concurrency})`,
        measured: `×${fmt(grpc.ratioToBare, 2)}`,
        met: grpc.ratioToBare <= bareLimit,
      });
    }
  }

  return {
    id: "transport-floor",
    title: "1. Transport floor vs broker",
    tables: [
      {
        title: "server CPU per call and throughput (medians of interleaved runs)",
        columns: [
          "scenario",
          "transport",
          "conc.",
          "calls/s",
          "server CPU µs/call",
          "× echo CPU",
          "× bare proxy CPU",
          "p50 ms",
          "p99 ms",
          "DB statements/call",
          "errors",
        ],
        rows: rows.map((r) => [
          r.scenario,
          r.transport,
          r.concurrency,
          fmt(r.callsPerSecond),
          fmt(r.cpuMicrosPerCall),
          fmt(r.ratioToEcho, 2),
          fmt(r.ratioToBare, 2),
          fmt(r.p50Ms, 2),
          fmt(r.p99Ms, 2),
          fmt(r.transactionsPerCall, 2),
          r.errors,
        ]),
        notes: [
          `${repeats} interleaved run(s) per row; ${options.quick ? 300 : "1,000 (c=1) / 3,000 (c=64)"} calls per run after a warm-up of ${options.quick ? 300 : 3000}.`,
          "Echo: the broker's own src/api servers (grpc-js and Connect), call context, error mapping and metrics, serving one echo RPC, in its own process.",
          "Bare proxy: the same Call RPC on the same server stack, making the same undici request (Pool, 16 connections) to the same upstream, with no authentication, crypto, audit, policy or scrubbing (bench/tools/bare-proxy-server.ts), in its own process.",
          "Cached: the user's token and data key are in the broker's caches (every call after the first).",
          "DB statements/call: transactions committed in the broker's database per call (pg_stat_database), caller-key and secret lookups and audit batches included.",
        ],
      },
    ],
    checks,
    errors: rows.reduce((n, r) => n + r.errors, 0),
    data: { repeats, rows },
  };
}
