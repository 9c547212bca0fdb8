/**
 * Scenario 6: the hot path on the embedded PGlite (the `npm start` default) vs a Postgres server.
 * Same broker build, same calls, measured one broker at a time.
 */
import type { BrokerProcess } from "../lib/broker-process.js";
import { runLoad } from "../lib/load.js";
import { processCpuMicros } from "../lib/process-cpu.js";
import { fmt, type SectionOptions, type SectionResult } from "../lib/report.js";
import type { ScenarioCalls } from "../lib/scenarios.js";

interface Row {
  readonly database: string;
  readonly scenario: string;
  readonly concurrency: number;
  readonly callsPerSecond: number;
  readonly cpuMicrosPerCall: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly errors: number;
}

export async function runEmbeddedVsServer(
  targets: ReadonlyArray<{ database: string; broker: BrokerProcess; calls: ScenarioCalls }>,
  options: SectionOptions,
): Promise<SectionResult> {
  const perRun = options.quick ? 300 : 3000;
  const rows: Row[] = [];
  for (const concurrency of [1, 16]) {
    for (const { database, broker, calls } of targets) {
      for (const [scenario, call] of [
        ["ListSecrets", calls.list],
        ["ProxyService.Call", calls.proxy],
      ] as const) {
        options.progress(`embedded vs server: ${database} ${scenario} c=${concurrency}`);
        await runLoad(perRun, Math.min(concurrency, 16), call);
        const cpu0 = processCpuMicros(broker.pid);
        const load = await runLoad(perRun, concurrency, call);
        rows.push({
          database,
          scenario,
          concurrency,
          callsPerSecond: load.callsPerSecond,
          cpuMicrosPerCall: (processCpuMicros(broker.pid) - cpu0) / perRun,
          p50Ms: load.p50Ms,
          p99Ms: load.p99Ms,
          errors: load.errors,
        });
      }
    }
  }
  return {
    id: "embedded-vs-server",
    title: "6. Embedded vs server database",
    tables: [
      {
        title: "the cached hot path over grpc-js on PGlite vs Postgres",
        columns: [
          "database",
          "scenario",
          "conc.",
          "calls/s",
          "broker CPU µs/call",
          "p50 ms",
          "p99 ms",
          "errors",
        ],
        rows: rows.map((r) => [
          r.database,
          r.scenario,
          r.concurrency,
          fmt(r.callsPerSecond),
          fmt(r.cpuMicrosPerCall),
          fmt(r.p50Ms, 2),
          fmt(r.p99Ms, 2),
          r.errors,
        ]),
        notes: [
          "PGlite runs inside the broker process (WebAssembly), so its CPU column includes the database's own work; Postgres's is in its server processes.",
          "PGlite is one connection: statements queue behind each other (and behind open transactions).",
        ],
      },
    ],
    checks: [],
    errors: rows.reduce((n, r) => n + r.errors, 0),
    data: { perRun, rows },
  };
}
