/**
 * `npm run bench` — broker CPU per call and calls/s, side by side, measured in one run.
 * `npm run bench -- --quick` is the smoke run CI executes so the suite never rots.
 *
 * The broker runs as a separate `keybroker serve` process; its CPU is read from /proc, so
 * the client's own work (in this process) is not counted. Dependencies (local KMS-protocol
 * server, JWKS issuer, HTTPS upstream) also live in this process.
 */
import { writeFile } from "node:fs/promises";
import { arch, cpus, platform } from "node:os";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Client, credentials, Metadata } from "@grpc/grpc-js";
import { Agent, request } from "undici";
import { ProxyService } from "../src/gen/keybroker/v1/proxy_pb.js";
import { SecretService } from "../src/gen/keybroker/v1/secrets_pb.js";
import { createGrpcClients, unary, type WireMessage } from "../test/support/grpc-client.js";
import { type BrokerProcess, startBrokerProcess } from "./lib/broker-process.js";
import { type LoadResult, median, runLoad } from "./lib/load.js";
import { processCpuMicros, processRssMiB } from "./lib/process-cpu.js";

const { values } = parseArgs({ options: { quick: { type: "boolean", default: false } } });
const quick = values.quick ?? false;
const CALLS = quick ? 300 : 3000;
const REPEATS = quick ? 1 : 3;
// V8 needs a few thousand calls to optimise the hot path; fewer inflates CPU per call.
const WARMUP = quick ? 300 : 3000;

interface Row {
  scenario: string;
  transport: string;
  concurrency: number;
  callsPerSecond: number;
  brokerCpuMicrosPerCall: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
}

async function measure(
  broker: BrokerProcess,
  scenario: string,
  transport: string,
  concurrency: number,
  call: () => Promise<unknown>,
): Promise<Row> {
  await runLoad(WARMUP, Math.min(concurrency, 16), call);
  const runs: Array<{ load: LoadResult; cpu: number }> = [];
  for (let i = 0; i < REPEATS; i++) {
    const cpu0 = processCpuMicros(broker.pid);
    const load = await runLoad(CALLS, concurrency, call);
    for (const [code, n] of Object.entries(load.errorsByCode)) failures[code] = (failures[code] ?? 0) + n;
    runs.push({ load, cpu: (processCpuMicros(broker.pid) - cpu0) / CALLS });
  }
  return {
    scenario,
    transport,
    concurrency,
    callsPerSecond: median(runs.map((r) => r.load.callsPerSecond)),
    brokerCpuMicrosPerCall: median(runs.map((r) => r.cpu)),
    p50Ms: median(runs.map((r) => r.load.p50Ms)),
    p99Ms: median(runs.map((r) => r.load.p99Ms)),
    errors: runs.reduce((n, r) => n + r.load.errors, 0),
  };
}

const failures: Record<string, number> = {};

async function main(): Promise<void> {
  const broker = await startBrokerProcess({ database: "postgres" });
  const rows: Row[] = [];
  try {
    // An hour: a full run on a busy machine outlasts the issuer's 5-minute default.
    const token = await broker.issuer.sign({ sub: "auth0|bench-user" }, { expiresInSec: 3600 });
    const auth = { callerKey: broker.callerKey, bearerToken: token };
    const grpc = createGrpcClients(broker.grpcAddress);
    const put = await unary(
      grpc.secrets,
      "PutSecret",
      { provider: "bench-upstream", label: "bench", fields: { token: broker.upstreamCredentials.bearer } },
      auth,
    );
    const secretId = (put.response.secret as WireMessage).id as string;

    // Transport floor: grpc.health.v1 Check is a trivial handler on the same grpc-js server.
    const raw = new Client(broker.grpcAddress, credentials.createInsecure());
    const identity = (b: Buffer) => b;
    const healthCheck = () =>
      new Promise((resolve, reject) =>
        raw.makeUnaryRequest(
          "/grpc.health.v1.Health/Check",
          identity,
          identity,
          Buffer.alloc(0),
          new Metadata(),
          {},
          (err, res) => (err ? reject(err) : resolve(res)),
        ),
      );
    const connectTransport = createConnectTransport({ baseUrl: broker.connectUrl, httpVersion: "2" });
    const connectSecrets = createClient(SecretService, connectTransport);
    const connectProxy = createClient(ProxyService, connectTransport);
    const headers = { "x-keybroker-key": broker.callerKey, authorization: `Bearer ${token}` };
    const proxyRequest = { secretId, method: "GET", path: "/ok" };

    const upstream = new Agent({ connect: { ca: broker.upstream.ca } });
    const direct = async () => {
      const res = await request(`https://127.0.0.1:${broker.upstream.port}/bearer/ok`, {
        dispatcher: upstream,
        headers: { authorization: `Bearer ${broker.upstreamCredentials.bearer}` },
      });
      await res.body.arrayBuffer();
    };

    for (const concurrency of [1, 64]) {
      rows.push(await measure(broker, "health check (transport floor)", "grpc-js", concurrency, healthCheck));
      rows.push(
        await measure(broker, "ListSecrets (cached)", "grpc-js", concurrency, () =>
          unary(grpc.secrets, "ListSecrets", {}, auth),
        ),
      );
      rows.push(
        await measure(broker, "ListSecrets (cached)", "connect-node", concurrency, () =>
          connectSecrets.listSecrets({}, { headers }),
        ),
      );
      rows.push(
        await measure(broker, "ProxyService.Call", "grpc-js", concurrency, () =>
          unary(grpc.proxy, "Call", proxyRequest, auth),
        ),
      );
      rows.push(
        await measure(broker, "ProxyService.Call", "connect-node", concurrency, () =>
          connectProxy.call(proxyRequest, { headers }),
        ),
      );
    }
    // Added latency: the same upstream call, direct (undici) vs through the broker (grpc-js).
    for (const concurrency of [1, 16, 64]) {
      const viaBroker = await runLoad(CALLS, concurrency, () =>
        unary(grpc.proxy, "Call", proxyRequest, auth),
      );
      const directly = await runLoad(CALLS, concurrency, direct);
      rows.push({
        scenario: "upstream direct (undici)",
        transport: "-",
        concurrency,
        callsPerSecond: directly.callsPerSecond,
        brokerCpuMicrosPerCall: 0,
        p50Ms: directly.p50Ms,
        p99Ms: directly.p99Ms,
        errors: directly.errors,
      });
      rows.push({
        scenario: "upstream via broker",
        transport: "grpc-js",
        concurrency,
        callsPerSecond: viaBroker.callsPerSecond,
        brokerCpuMicrosPerCall: Number.NaN,
        p50Ms: viaBroker.p50Ms,
        p99Ms: viaBroker.p99Ms,
        errors: viaBroker.errors,
      });
    }
    const rss = processRssMiB(broker.pid);
    grpc.close();
    raw.close();
    await upstream.close();
    print(rows, rss);
    const result = {
      date: new Date().toISOString(),
      quick,
      machine: {
        cpus: cpus().length,
        model: cpus()[0]?.model,
        node: process.version,
        platform: platform(),
        arch: arch(),
      },
      database: "postgres",
      brokerRssMiB: rss,
      rows,
    };
    await writeFile(
      new URL(`./results/${quick ? "quick" : "latest"}.json`, import.meta.url),
      `${JSON.stringify(result, null, 2)}\n`,
    );
  } finally {
    await broker.stop();
  }
  if (rows.some((r) => r.errors > 0)) {
    console.error(`bench: some calls failed: ${JSON.stringify(failures)}`);
    process.exitCode = 1;
  }
}

function print(rows: readonly Row[], rss: number): void {
  const fmt = (n: number, digits = 0) => (Number.isNaN(n) ? "-" : n.toFixed(digits));
  console.log(`\n| scenario | transport | conc. | calls/s | broker CPU µs/call | p50 ms | p99 ms | errors |`);
  console.log(`|---|---|---:|---:|---:|---:|---:|---:|`);
  for (const r of rows) {
    console.log(
      `| ${r.scenario} | ${r.transport} | ${r.concurrency} | ${fmt(r.callsPerSecond)} | ${fmt(r.brokerCpuMicrosPerCall)} | ${fmt(r.p50Ms, 3)} | ${fmt(r.p99Ms, 3)} | ${r.errors} |`,
    );
  }
  console.log(
    `\nbroker RSS after the run: ${rss.toFixed(0)} MiB; ${CALLS} calls x ${REPEATS} repeats per row (medians)`,
  );
}

await main();
