/**
 * CPU per finished call spent recording its metrics (metrics.rpcCompleted), for A/B comparisons
 * of the observability code on the hot path:
 *
 *   npm run build && npx tsx bench/tools/call-end-cost.ts [--dist OTHER/dist] [--calls 2000000]
 *
 * Imports the compiled metrics module of this checkout (or of another build's dist/), records
 * one route's calls in a loop and prints nanoseconds per call (median of 5 rounds).
 */
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: { dist: { type: "string", default: "dist" }, calls: { type: "string", default: "2000000" } },
});
const calls = Number(values.calls);
const url = pathToFileURL(join(values.dist ?? "dist", "src/observability/metrics.js")).href;
const { createMetrics } = (await import(url)) as typeof import("../../src/observability/metrics.js");

const metrics = createMetrics();
const event = {
  type: "unary",
  service: "keybroker.v1.ProxyService",
  method: "Call",
  code: 0,
  durationMs: 0.4,
} as const;
const rounds: number[] = [];
for (let round = 0; round < 5; round++) {
  const start = process.cpuUsage();
  for (let i = 0; i < calls; i++) metrics.rpcCompleted(event);
  const used = process.cpuUsage(start);
  rounds.push(((used.user + used.system) * 1000) / calls);
}
rounds.sort((a, b) => a - b);
console.log(`${values.dist}: ${rounds[2]?.toFixed(0)} ns CPU per rpcCompleted (median of 5 × ${calls})`);
