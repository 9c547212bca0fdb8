/**
 * `npm run bench`: the benchmark suite (issue #6), side by side in one run, printed as markdown
 * and written to bench/results/latest.json. `npm run bench -- --quick` is the smoke run CI executes
 * so the suite never rots (its numbers are not quoted anywhere). `--only id,id` runs some sections:
 * envelope, scrubber-worst-case, transport-floor, added-latency, embedded-vs-server, memory, kms-economy,
 * scaling.
 *
 * Brokers run as `keybroker serve` child processes (the compiled build); their CPU is read from
 * /proc, so the load generator's work is not counted. On a machine with two or more CPUs the
 * brokers are pinned to CPU 1 and this process (load, upstream, KMS server, issuer) to CPU 0
 * (`--no-pin` to let the scheduler place them); Postgres is not pinned.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { arch, cpus, platform } from "node:os";
import { parseArgs } from "node:util";
import { type BareProxyProcess, startBareProxyProcess } from "./lib/bare-proxy-process.js";
import { type BrokerProcess, startBrokerProcess } from "./lib/broker-process.js";
import { type EchoProcess, startEchoProcess } from "./lib/echo-process.js";
import { markdownChecks, markdownTable, type SectionOptions, type SectionResult } from "./lib/report.js";
import { createScenarioCalls } from "./lib/scenarios.js";
import { runAddedLatency } from "./sections/added-latency.js";
import { runEmbeddedVsServer } from "./sections/embedded-vs-server.js";
import { runEnvelopeVsEsdk } from "./sections/envelope-vs-esdk.js";
import { runKmsEconomy } from "./sections/kms-economy.js";
import { runMemory } from "./sections/memory.js";
import { runScaling } from "./sections/scaling.js";
import { runScrubberWorstCase } from "./sections/scrubber-worst-case.js";
import { runTransportFloor } from "./sections/transport-floor.js";
import { runWorkers } from "./sections/workers.js";

const SECTIONS = [
  "envelope",
  "scrubber-worst-case",
  "transport-floor",
  "added-latency",
  "embedded-vs-server",
  "memory",
  "kms-economy",
  "scaling",
  "workers",
] as const;
type SectionId = (typeof SECTIONS)[number];

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string" },
    "no-pin": { type: "boolean", default: false },
  },
});
const quick = values.quick ?? false;
const only = new Set((values.only ?? SECTIONS.join(",")).split(",").map((s) => s.trim()));
for (const id of only) {
  if (!(SECTIONS as readonly string[]).includes(id))
    throw new Error(`unknown section "${id}"; known: ${SECTIONS.join(", ")}`);
}
const wanted = (id: SectionId) => only.has(id);
const hasTaskset = spawnSync("taskset", ["--version"], { stdio: "ignore" }).status === 0;
const pin = values["no-pin"] !== true && cpus().length >= 2 && hasTaskset;
if (pin) spawnSync("taskset", ["-a", "-p", "-c", "0", String(process.pid)], { stdio: "ignore" });
const brokerCpu = pin ? { cpu: 1 } : {};

const options: SectionOptions = {
  quick,
  progress: (line) => process.stderr.write(`bench: ${line}\n`),
};

function gitCommit(): string {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}

/**
 * A section that throws is reported as failed (errors > 0, so the run exits 1) and the run goes
 * on: an hour of other sections is not lost to one broken one. Its error is printed and kept.
 */
async function guarded(id: SectionId, run: () => Promise<SectionResult>): Promise<SectionResult> {
  try {
    return await run();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    options.progress(`${id}: FAILED: ${message}`);
    return {
      id,
      title: `${id}: FAILED (${message})`,
      tables: [],
      checks: [],
      errors: 1,
      data: { error: message },
    };
  }
}

async function main(): Promise<void> {
  const started = Date.now();
  const results: SectionResult[] = [];
  if (wanted("envelope")) results.push(await guarded("envelope", () => runEnvelopeVsEsdk(options)));
  if (wanted("scrubber-worst-case"))
    results.push(await guarded("scrubber-worst-case", () => runScrubberWorstCase(options)));

  const brokerSections: SectionId[] = [
    "transport-floor",
    "added-latency",
    "embedded-vs-server",
    "memory",
    "kms-economy",
    "scaling",
  ];
  if (brokerSections.some(wanted)) {
    options.progress("starting keybroker serve on Postgres");
    const broker: BrokerProcess = await startBrokerProcess({ database: "postgres", ...brokerCpu });
    let echo: EchoProcess | undefined;
    let bare: BareProxyProcess | undefined;
    try {
      if (wanted("transport-floor")) bare = await startBareProxyProcess(broker, brokerCpu);
      const calls = await createScenarioCalls(broker, undefined, bare);
      try {
        if (wanted("transport-floor")) {
          echo = await startEchoProcess(brokerCpu);
          results.push(await runTransportFloor(broker, echo, calls, options, bare));
          await echo.stop();
          echo = undefined;
          await bare?.stop();
          bare = undefined;
        }
        if (wanted("added-latency"))
          results.push(await guarded("added-latency", () => runAddedLatency(calls, options)));
        if (wanted("embedded-vs-server")) {
          options.progress("starting keybroker serve on PGlite");
          const embedded = await startBrokerProcess({ database: "pglite", ...brokerCpu });
          try {
            const embeddedCalls = await createScenarioCalls(embedded);
            try {
              results.push(
                await runEmbeddedVsServer(
                  [
                    { database: "PGlite (embedded)", broker: embedded, calls: embeddedCalls },
                    { database: "PostgreSQL 15 (server)", broker, calls },
                  ],
                  options,
                ),
              );
            } finally {
              embeddedCalls.close();
            }
          } finally {
            await embedded.stop();
          }
        }
        if (wanted("memory")) results.push(await guarded("memory", () => runMemory(broker, calls, options)));
      } finally {
        calls.close();
      }
      if (wanted("kms-economy"))
        results.push(await guarded("kms-economy", () => runKmsEconomy(broker, options)));
      if (wanted("scaling")) results.push(await guarded("scaling", () => runScaling(broker, options)));
    } finally {
      await echo?.stop();
      await bare?.stop();
      await broker.stop();
    }
  }
  // Its own brokers (1 and 2 workers), unpinned: two workers need both cores.
  if (wanted("workers")) results.push(await guarded("workers", () => runWorkers(options)));

  const machine = {
    cpus: cpus().length,
    model: cpus()[0]?.model,
    node: process.version,
    platform: platform(),
    arch: arch(),
    pinned: pin,
  };
  const minutes = (Date.now() - started) / 60_000;
  const ordered = SECTIONS.flatMap((id) => results.filter((r) => r.id === id));
  console.log(
    `# keybroker bench (${quick ? "quick smoke run: numbers not meaningful" : "full run"}), commit ${gitCommit()}, ` +
      `${new Date().toISOString()}, ${machine.cpus} × ${machine.model}, Node ${machine.node}` +
      `${pin ? ", brokers pinned to CPU 1, load generator to CPU 0" : ""}, ${minutes.toFixed(1)} min\n`,
  );
  for (const section of ordered) {
    console.log(`## ${section.title}\n`);
    for (const table of section.tables) console.log(`${markdownTable(table)}\n`);
  }
  const checks = ordered.flatMap((s) => s.checks);
  console.log(`## Targets\n\n${markdownChecks(checks)}\n`);

  await writeFile(
    // A partial run (--only) never replaces the full run's latest.json, which the README quotes.
    new URL(`./results/${resultsName(quick, values.only)}.json`, import.meta.url),
    `${JSON.stringify({ date: new Date().toISOString(), commit: gitCommit(), quick, machine, minutes, sections: ordered }, null, 2)}\n`,
  );
  const errors = ordered.reduce((n, s) => n + s.errors, 0);
  if (errors > 0) {
    console.error(`bench: ${errors} call(s) failed; the numbers above are not trustworthy`);
    process.exitCode = 1;
  }
}

function resultsName(isQuick: boolean, onlyIds: string | undefined): string {
  const kind = isQuick ? "quick" : "latest";
  return onlyIds === undefined ? kind : `${kind}-only-${onlyIds.replaceAll(/[^a-z0-9-]+/g, "_")}`;
}

await main();
