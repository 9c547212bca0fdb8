/**
 * What the AWS SDK costs per KMS request, in client CPU, against the local KMS-protocol server
 * in a child process (its CPU is not counted), at 0 ms latency:
 *
 *   npx tsx bench/tools/kms-sdk-cost.ts [--calls 4000] [--concurrency 32] [--rounds 3]
 *
 * Variants, interleaved per round, medians printed:
 *   sdk-default     a KMSClient as the broker built it before issue 17 (createKmsClient's old options)
 *   sdk-broker      createKmsClient as it is now (src/keys/aws-kms-keyring.ts)
 *   keyring         the broker's keyring reEncrypt over sdk-broker (context copy, checks)
 *   floor-http      the same JSON body POSTed with node:http and a keep-alive agent, unsigned:
 *                   the transport's floor, below which no KMS client can go
 */
import http from "node:http";
import { parseArgs } from "node:util";
import { KMSClient, ReEncryptCommand } from "@aws-sdk/client-kms";
import { createAwsKmsKeyring, createKmsClient } from "../../src/keys/aws-kms-keyring.js";
import { serveKmsIfChild, startKmsChild } from "../lib/kms-child.js";

if (!(await serveKmsIfChild())) await main();

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      calls: { type: "string", default: "4000" },
      concurrency: { type: "string", default: "32" },
      rounds: { type: "string", default: "3" },
    },
  });
  const calls = Number(values.calls);
  const concurrency = Number(values.concurrency);
  const rounds = Number(values.rounds);
  const kms = await startKmsChild(import.meta.url);
  const credentials = { accessKeyId: "bench", secretAccessKey: "bench" };
  try {
    const source = await kms.call<string>({ op: "createKey" });
    const target = await kms.call<string>({ op: "createKey" });
    const broker = createKmsClient({
      region: kms.region,
      endpoint: kms.endpoint,
      maxAttempts: 3,
      credentials,
    });
    const keyring = createAwsKmsKeyring({ client: broker, keyId: source });
    const context = { purpose: "keybroker:user-data-key", user_ref: "ab".repeat(32) };
    const wrapped = await keyring.generateDataKey(context);
    wrapped.plaintext.fill(0);
    const blob = { wrapped: Buffer.from(wrapped.wrapped), keyId: wrapped.keyId };
    const oldClient = new KMSClient({
      region: kms.region,
      endpoint: kms.endpoint,
      maxAttempts: 3,
      retryMode: "standard",
      credentials,
      requestHandler: { requestTimeout: 2_000, throwOnRequestTimeout: true, connectionTimeout: 2_000 },
    });
    const command = () =>
      new ReEncryptCommand({
        CiphertextBlob: blob.wrapped,
        SourceKeyId: blob.keyId,
        SourceEncryptionContext: { ...context },
        DestinationKeyId: target,
        DestinationEncryptionContext: { ...context },
      });
    const agent = new http.Agent({ keepAlive: true, maxSockets: 50 });
    const url = new URL(kms.endpoint);
    const body = JSON.stringify({
      CiphertextBlob: blob.wrapped.toString("base64"),
      SourceKeyId: blob.keyId,
      SourceEncryptionContext: context,
      DestinationKeyId: target,
      DestinationEncryptionContext: context,
    });
    const rawPost = () =>
      new Promise<void>((resolve, reject) => {
        const req = http.request(
          {
            host: url.hostname,
            port: url.port,
            method: "POST",
            path: "/",
            agent,
            headers: {
              "content-type": "application/x-amz-json-1.1",
              "x-amz-target": "TrentService.ReEncrypt",
              "content-length": Buffer.byteLength(body),
              authorization:
                "AWS4-HMAC-SHA256 Credential=bench/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=00",
              "x-amz-date": "20260101T000000Z",
            },
          },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () => {
              if (res.statusCode !== 200) reject(new Error(`${res.statusCode} ${Buffer.concat(chunks)}`));
              else {
                JSON.parse(Buffer.concat(chunks).toString());
                resolve();
              }
            });
          },
        );
        req.on("error", reject);
        req.end(body);
      });
    const variants: Record<string, () => Promise<unknown>> = {
      "sdk-default": () => oldClient.send(command()),
      "sdk-broker": () => broker.send(command()),
      keyring: () => keyring.reEncrypt(blob, context, target),
      "floor-http": rawPost,
    };
    const results: Record<string, number[]> = {};
    for (const name of Object.keys(variants))
      await runCalls(variants[name] as () => Promise<unknown>, 200, concurrency);
    for (let round = 0; round < rounds; round++) {
      for (const [name, fn] of Object.entries(variants)) {
        const before = process.cpuUsage();
        const started = performance.now();
        await runCalls(fn, calls, concurrency);
        const cpu = process.cpuUsage(before);
        const wall = performance.now() - started;
        const samples = results[name] ?? [];
        samples.push((cpu.user + cpu.system) / calls);
        results[name] = samples;
        process.stderr.write(
          `round ${round + 1} ${name}: ${((cpu.user + cpu.system) / calls).toFixed(0)} µs CPU/call, ${Math.round((calls / wall) * 1000)} calls/s\n`,
        );
      }
    }
    console.log("variant\tµs CPU per ReEncrypt (median)");
    for (const [name, samples] of Object.entries(results)) {
      const sorted = [...samples].sort((a, b) => a - b);
      console.log(`${name}\t${(sorted[Math.floor(sorted.length / 2)] ?? 0).toFixed(0)}`);
    }
    broker.destroy();
    oldClient.destroy();
    agent.destroy();
  } finally {
    kms.stop();
  }
}

async function runCalls(fn: () => Promise<unknown>, calls: number, concurrency: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < calls) {
        next += 1;
        await fn();
      }
    }),
  );
}
