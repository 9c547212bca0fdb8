/**
 * Scenario 2: what the broker adds to a call's latency. The same upstream request, made directly
 * with undici (as the app would without a broker) and through ProxyService.Call over grpc-js,
 * interleaved run by run, at concurrency 1, 16 and 64.
 */
import { runLoad } from "../lib/load.js";
import { fmt, median, type SectionOptions, type SectionResult } from "../lib/report.js";
import type { ScenarioCalls } from "../lib/scenarios.js";

interface Row {
  readonly concurrency: number;
  readonly directP50Ms: number;
  readonly directP99Ms: number;
  readonly brokerP50Ms: number;
  readonly brokerP99Ms: number;
  readonly addedP50Ms: number;
  readonly addedP99Ms: number;
  readonly brokerCallsPerSecond: number;
  readonly errors: number;
}

export async function runAddedLatency(calls: ScenarioCalls, options: SectionOptions): Promise<SectionResult> {
  const repeats = options.quick ? 1 : 3;
  const rows: Row[] = [];
  for (const concurrency of [1, 16, 64]) {
    const perRun = options.quick ? 300 : concurrency === 1 ? 1000 : 3000;
    await runLoad(perRun, concurrency, calls.direct);
    await runLoad(perRun, concurrency, calls.proxy);
    const direct: Array<{ p50: number; p99: number; errors: number }> = [];
    const broker: Array<{ p50: number; p99: number; cps: number; errors: number }> = [];
    for (let repeat = 0; repeat < repeats; repeat++) {
      options.progress(`added latency: c=${concurrency} run ${repeat + 1}/${repeats}`);
      const d = await runLoad(perRun, concurrency, calls.direct);
      direct.push({ p50: d.p50Ms, p99: d.p99Ms, errors: d.errors });
      const b = await runLoad(perRun, concurrency, calls.proxy);
      broker.push({ p50: b.p50Ms, p99: b.p99Ms, cps: b.callsPerSecond, errors: b.errors });
    }
    const directP50 = median(direct.map((x) => x.p50));
    const directP99 = median(direct.map((x) => x.p99));
    const brokerP50 = median(broker.map((x) => x.p50));
    const brokerP99 = median(broker.map((x) => x.p99));
    rows.push({
      concurrency,
      directP50Ms: directP50,
      directP99Ms: directP99,
      brokerP50Ms: brokerP50,
      brokerP99Ms: brokerP99,
      addedP50Ms: brokerP50 - directP50,
      addedP99Ms: brokerP99 - directP99,
      brokerCallsPerSecond: median(broker.map((x) => x.cps)),
      errors: [...direct, ...broker].reduce((n, x) => n + x.errors, 0),
    });
  }
  const c1 = rows.find((r) => r.concurrency === 1);
  return {
    id: "added-latency",
    title: "2. Added latency",
    tables: [
      {
        title:
          "the same upstream call, direct (undici) vs through the broker (grpc-js), medians of interleaved runs",
        columns: [
          "conc.",
          "direct p50 / p99 ms",
          "via broker p50 / p99 ms",
          "added p50 ms",
          "added p99 ms",
          "via broker calls/s",
          "errors",
        ],
        rows: rows.map((r) => [
          r.concurrency,
          `${fmt(r.directP50Ms, 2)} / ${fmt(r.directP99Ms, 2)}`,
          `${fmt(r.brokerP50Ms, 2)} / ${fmt(r.brokerP99Ms, 2)}`,
          fmt(r.addedP50Ms, 2),
          fmt(r.addedP99Ms, 2),
          fmt(r.brokerCallsPerSecond),
          r.errors,
        ]),
        notes: [
          "Through the broker, a call also authenticates the caller key (a database read, never cached: catalogue B20) and commits its `started` audit row before the key is used (I8); the secret's sealed row is read meanwhile.",
          "At concurrency 16 and 64 the broker's single core is the bottleneck, so latency there is mostly queueing.",
        ],
      },
    ],
    checks: c1
      ? [
          {
            target: "added p50 latency ≤ 1 ms at concurrency 1 over a direct upstream call",
            measured: `${fmt(c1.addedP50Ms, 2)} ms`,
            met: c1.addedP50Ms <= 1,
          },
        ]
      : [],
    errors: rows.reduce((n, r) => n + r.errors, 0),
    data: { repeats, rows },
  };
}
