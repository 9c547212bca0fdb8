/**
 * Scenario 7: the broker's resident memory across many proxied calls. Caches are bounded
 * (verified tokens, data keys, nonces, throttles), so after warm-up RSS should stay flat.
 */
import type { BrokerProcess } from "../lib/broker-process.js";
import { runLoad } from "../lib/load.js";
import { processRssMiB } from "../lib/process-cpu.js";
import { fmt, type SectionOptions, type SectionResult } from "../lib/report.js";
import type { ScenarioCalls } from "../lib/scenarios.js";

const CHUNKS = 10;

export async function runMemory(
  broker: BrokerProcess,
  calls: ScenarioCalls,
  options: SectionOptions,
): Promise<SectionResult> {
  const total = options.quick ? 5000 : 100_000;
  const before = processRssMiB(broker.pid);
  const samples: Array<{ calls: number; rssMiB: number }> = [{ calls: 0, rssMiB: before }];
  let errors = 0;
  for (let i = 1; i <= CHUNKS; i++) {
    options.progress(`memory: ${(i * total) / CHUNKS} of ${total} proxied calls`);
    const load = await runLoad(total / CHUNKS, 64, calls.proxy);
    errors += load.errors;
    samples.push({ calls: (i * total) / CHUNKS, rssMiB: processRssMiB(broker.pid) });
  }
  const afterFirstChunk = samples[1]?.rssMiB ?? Number.NaN;
  const after = samples.at(-1)?.rssMiB ?? Number.NaN;
  const peak = Math.max(...samples.map((s) => s.rssMiB));
  // The first chunk fills caches, pools and JIT code. After it RSS is a sawtooth (V8 lets the old
  // generation grow, then compacts), so "last sample vs first" only says where the tooth was. A
  // leak raises the teeth: compare the peak of the second half of the run with the first half's.
  const steady = samples.slice(1);
  const half = Math.ceil(steady.length / 2);
  const firstHalfPeak = Math.max(...steady.slice(0, half).map((s) => s.rssMiB));
  const secondHalfPeak = Math.max(...steady.slice(half).map((s) => s.rssMiB));
  const growth = (secondHalfPeak - firstHalfPeak) / firstHalfPeak;
  return {
    id: "memory",
    title: "7. Memory",
    tables: [
      {
        title: `broker RSS across ${total} proxied calls (grpc-js, concurrency 64)`,
        columns: ["calls so far", "RSS MiB"],
        rows: samples.map((s) => [s.calls, fmt(s.rssMiB, 1)]),
        notes: [
          `before ${fmt(before, 1)} MiB, after the first ${total / CHUNKS} calls ${fmt(afterFirstChunk, 1)} MiB, after all ${fmt(after, 1)} MiB (peak ${fmt(peak, 1)}); ${errors} errors.`,
          "RSS includes V8's heap, which grows between collections and drops at a compaction (a sawtooth): a leak shows as rising peaks, so the check compares the peaks of the run's two halves (after the first chunk).",
        ],
      },
    ],
    checks: [
      {
        target: `no RSS growth beyond caches' bounds (${total} proxied calls)`,
        measured: `second half's peak ${fmt(secondHalfPeak, 1)} MiB vs first half's ${fmt(firstHalfPeak, 1)} MiB (${growth >= 0 ? "+" : ""}${fmt(growth * 100, 1)}%)`,
        // 10%: a tooth's height varies by a few MiB from one compaction to the next.
        met: growth <= 0.1 && errors === 0,
      },
    ],
    errors: errors,
    data: { total, samples, errors },
  };
}
