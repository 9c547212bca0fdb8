/**
 * One hot-path scenario against a real `keybroker serve`, for before/after comparisons while
 * optimising (the full suite is bench/run.ts):
 *
 *   npx tsx bench/tools/profile-hot-path.ts [--scenario proxy|list|health|connectProxy|connectList|echo|connectEcho|bare|connectBare]
 *     [--concurrency 64]
 *     [--calls 20000] [--database postgres|pglite] [--profile DIR]
 *
 * Prints the broker's CPU per call (from /proc, so this client is not counted) and latency.
 * With --profile, the broker writes a V8 CPU profile into DIR when it exits, and this prints its
 * per-stage breakdown in µs per call (bench/lib/profile-stages.ts: transport, caller key, token,
 * audit encode/hash and write, database, crypto, outbound, scrub, metrics, policy, rate limit,
 * signals); summarise it further with `npx tsx bench/tools/profile-summary.ts DIR/<file>.cpuprofile`.
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startBareProxyProcess } from "../lib/bare-proxy-process.js";
import { type BrokerProcess, startBrokerProcess } from "../lib/broker-process.js";
import { startEchoProcess } from "../lib/echo-process.js";
import { runLoad } from "../lib/load.js";
import { processCpuMicros } from "../lib/process-cpu.js";
import { profileStages } from "../lib/profile-stages.js";
import { createScenarioCalls, type ScenarioName } from "../lib/scenarios.js";

const { values } = parseArgs({
  options: {
    scenario: { type: "string", default: "proxy" },
    concurrency: { type: "string", default: "64" },
    calls: { type: "string", default: "20000" },
    database: { type: "string", default: "postgres" },
    // Calls rotate over this many users, each with their own token and secret.
    users: { type: "string", default: "1" },
    profile: { type: "string" },
    // Broker on this CPU; run this script under `taskset -c <other>` for the quietest numbers.
    "broker-cpu": { type: "string" },
    // Run another build's broker (e.g. a worktree of main): compare builds run after run.
    "broker-dist": { type: "string" },
  },
});
const scenario = values.scenario ?? "proxy";
const concurrency = Number(values.concurrency);
const calls = Number(values.calls);
const database = values.database === "pglite" ? "pglite" : "postgres";

let lastCpuPerCall = Number.NaN;
async function measure(pid: number, call: () => Promise<unknown>): Promise<string> {
  await runLoad(Math.min(calls, 3000), Math.min(concurrency, 16), call);
  const cpu0 = processCpuMicros(pid);
  const load = await runLoad(calls, concurrency, call);
  const cpu = (processCpuMicros(pid) - cpu0) / calls;
  lastCpuPerCall = cpu;
  return (
    `${scenario} c=${concurrency}: ${cpu.toFixed(0)} µs server CPU/call, ` +
    `${load.callsPerSecond.toFixed(0)} calls/s, p50 ${load.p50Ms.toFixed(3)} ms, ` +
    `p99 ${load.p99Ms.toFixed(3)} ms, errors ${load.errors} ${JSON.stringify(load.errorsByCode)}`
  );
}

if (scenario === "echo" || scenario === "connectEcho") {
  const echo = await startEchoProcess();
  try {
    console.log(await measure(echo.pid, scenario === "echo" ? echo.grpc : echo.connect));
  } finally {
    await echo.stop();
  }
} else if (scenario === "bare" || scenario === "connectBare") {
  // The bare proxy floor: the same RPC and upstream request, nothing else (bench/tools/bare-proxy-server.ts).
  const broker: BrokerProcess = await startBrokerProcess({ database });
  const bare = await startBareProxyProcess(broker);
  try {
    const calls = await createScenarioCalls(broker, "auth0|bench-user-0", bare);
    console.log(await measure(bare.pid, scenario === "bare" ? calls.bare : calls.connectBare));
    calls.close();
  } finally {
    await bare.stop();
    await broker.stop();
  }
} else {
  const broker: BrokerProcess = await startBrokerProcess({
    database,
    ...(values.profile === undefined ? {} : { cpuProfileDir: values.profile }),
    ...(values["broker-cpu"] === undefined ? {} : { cpu: Number(values["broker-cpu"]) }),
    ...(values["broker-dist"] === undefined ? {} : { dist: values["broker-dist"] }),
  });
  try {
    const all = await Promise.all(
      Array.from({ length: Number(values.users) }, (_, i) =>
        createScenarioCalls(broker, `auth0|bench-user-${i}`),
      ),
    );
    let turn = 0;
    const rotating = () => {
      const scenarios = all[turn++ % all.length] as (typeof all)[number];
      return scenarios[scenario as ScenarioName]();
    };
    broker.upstream.reset();
    const tx0 = await broker.committedTransactions();
    const line = await measure(broker.pid, rotating);
    const tx1 = await broker.committedTransactions();
    // Warm-up calls are counted too (measure() runs them first), hence the divisor.
    const warmup = Math.min(calls, 3000);
    const perCall =
      tx0 === undefined || tx1 === undefined ? "n/a" : ((tx1 - tx0) / (calls + warmup)).toFixed(2);
    console.log(
      `${line} (${database}), database transactions per call ${perCall}, ` +
        `upstream connections opened ${broker.upstream.connections()}`,
    );
    for (const scenarios of all) scenarios.close();
  } finally {
    await broker.stop();
  }
  if (values.profile !== undefined) printStages(values.profile);
}

/** The per-stage breakdown (µs per call) of the profile the broker wrote on exit. */
function printStages(dir: string): void {
  const newest = readdirSync(dir)
    .filter((f) => f.endsWith(".cpuprofile"))
    .map((f) => join(dir, f))
    .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)[0];
  if (newest === undefined || !Number.isFinite(lastCpuPerCall)) return;
  console.log(`per-stage CPU (${newest}, second half of the run, µs per call):`);
  for (const { stage, share, microsPerCall } of profileStages(newest, lastCpuPerCall)) {
    console.log(
      `  ${stage.padEnd(38)} ${microsPerCall.toFixed(0).padStart(5)} µs  ${(share * 100).toFixed(1)}%`,
    );
  }
}
