import { parseArgs } from "node:util";
import { startLocalKmsServer } from "./local-kms-server.js";

/**
 * Runs the local KMS as its own process, for benchmarks and manual runs:
 *   tsx test/support/local-kms-main.ts --port 4599 [--latency-ms 5] [--region us-east-1]
 * Prints one JSON line {"endpoint","region","keyArn","macKeyArn"} (a master key and an HMAC_256
 * key for audit checkpoints are created up front), then
 * serves until SIGINT/SIGTERM.
 */
const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    "latency-ms": { type: "string", default: "0" },
    region: { type: "string", default: "us-east-1" },
  },
});

const port = Number(values.port);
const latencyMs = Number(values["latency-ms"]);
if (!Number.isInteger(port) || port < 0 || port > 65535 || !Number.isFinite(latencyMs) || latencyMs < 0) {
  console.error("usage: local-kms-main.ts [--port N] [--latency-ms N] [--region R]");
  process.exit(2);
}

const server = await startLocalKmsServer({ port, latencyMs, region: values.region });
const keyArn = server.createKey("local-kms-main default key");
const macKeyArn = server.createKey("local-kms-main audit checkpoint key", "HMAC_256");
console.log(JSON.stringify({ endpoint: server.endpoint, region: server.region, keyArn, macKeyArn }));

async function shutdown(): Promise<void> {
  await server.close();
  process.exit(0);
}
process.once("SIGINT", () => void shutdown());
process.once("SIGTERM", () => void shutdown());
