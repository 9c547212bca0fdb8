/**
 * Scenario 4: how many KMS calls proxied traffic costs. Users are created through PutSecret on one
 * broker; then the same random traffic runs on that (warm) broker and on a fresh replica whose
 * data-key cache is cold, with 20 ms of KMS latency, counting Decrypts at the local KMS server.
 */
import {
  createGrpcClients,
  type GrpcClients,
  unary,
  type WireMessage,
} from "../../test/support/grpc-client.js";
import type { BrokerProcess } from "../lib/broker-process.js";
import { fmt, type SectionOptions, type SectionResult } from "../lib/report.js";

interface BenchUser {
  readonly token: string;
  readonly secretId: string;
}

interface TrafficResult {
  readonly broker: string;
  readonly calls: number;
  readonly distinctUsers: number;
  readonly kmsDecrypts: number;
  readonly hitRatio: number;
  readonly firstCallP50Ms: number;
  readonly firstCallP99Ms: number;
  readonly laterCallP50Ms: number;
  readonly laterCallP99Ms: number;
  readonly callsPerSecond: number;
  readonly errors: number;
}

const KMS_LATENCY_MS = 20;
const CONCURRENCY = 16;

/** A small deterministic PRNG, so every run sends the same traffic. */
function lcg(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state * 1103515245 + 12345) % 2147483648;
    return state / 2147483648;
  };
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted.length === 0
    ? Number.NaN
    : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number);
}

async function createUsers(broker: BrokerProcess, clients: GrpcClients, count: number): Promise<BenchUser[]> {
  const users: BenchUser[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < count) {
        const i = next++;
        const token = await broker.issuer.sign({ sub: `auth0|kms-economy-${i}` }, { expiresInSec: 3600 });
        const put = await unary(
          clients.secrets,
          "PutSecret",
          { provider: "bench-upstream", label: "kms", fields: { token: broker.upstreamCredentials.bearer } },
          { callerKey: broker.callerKey, bearerToken: token },
        );
        users.push({ token, secretId: (put.response.secret as WireMessage).id as string });
      }
    }),
  );
  return users;
}

async function runTraffic(
  name: string,
  broker: BrokerProcess,
  clients: GrpcClients,
  users: readonly BenchUser[],
  calls: number,
): Promise<TrafficResult> {
  const random = lcg(42);
  const picks = Array.from({ length: calls }, () => Math.floor(random() * users.length));
  const seen = new Set<number>();
  const first: number[] = [];
  const later: number[] = [];
  let errors = 0;
  broker.kms.resetCounts();
  const started = performance.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < picks.length) {
        const index = picks[next++] as number;
        const user = users[index] as BenchUser;
        const isFirst = !seen.has(index);
        seen.add(index);
        const t0 = performance.now();
        try {
          await unary(
            clients.proxy,
            "Call",
            { secretId: user.secretId, method: "GET", path: "/ok" },
            { callerKey: broker.callerKey, bearerToken: user.token },
          );
        } catch {
          errors += 1;
        }
        (isFirst ? first : later).push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  first.sort((a, b) => a - b);
  later.sort((a, b) => a - b);
  const kmsDecrypts = broker.kms.callCount("Decrypt");
  return {
    broker: name,
    calls,
    distinctUsers: seen.size,
    kmsDecrypts,
    hitRatio: 1 - kmsDecrypts / calls,
    firstCallP50Ms: quantile(first, 0.5),
    firstCallP99Ms: quantile(first, 0.99),
    laterCallP50Ms: quantile(later, 0.5),
    laterCallP99Ms: quantile(later, 0.99),
    callsPerSecond: calls / seconds,
    errors,
  };
}

export async function runKmsEconomy(broker: BrokerProcess, options: SectionOptions): Promise<SectionResult> {
  const userCount = options.quick ? 100 : 1000;
  const calls = options.quick ? 1000 : 10_000;
  options.progress(`kms economy: creating ${userCount} users`);
  const clients = createGrpcClients(broker.grpcAddress);
  const users = await createUsers(broker, clients, userCount);

  broker.kms.setFaults({ latencyMs: KMS_LATENCY_MS });
  const results: TrafficResult[] = [];
  try {
    options.progress(`kms economy: ${calls} calls on the warm broker`);
    results.push(
      await runTraffic(
        "the broker that created the users (cache seeded by their writes)",
        broker,
        clients,
        users,
        calls,
      ),
    );
    options.progress(`kms economy: ${calls} calls on a cold replica`);
    const replica = await broker.startReplica();
    const replicaClients = createGrpcClients(replica.grpcAddress);
    try {
      results.push(
        await runTraffic("a fresh replica (cold data-key cache)", broker, replicaClients, users, calls),
      );
    } finally {
      replicaClients.close();
      await replica.stop();
    }
  } finally {
    broker.kms.setFaults({ latencyMs: 0 });
    clients.close();
  }

  const cold = results[1];
  return {
    id: "kms-economy",
    title: "4. KMS economy",
    tables: [
      {
        title: `${calls} proxied calls spread at random over ${userCount} users, concurrency ${CONCURRENCY}, KMS latency ${KMS_LATENCY_MS} ms`,
        columns: [
          "broker",
          "distinct users",
          "KMS Decrypt calls",
          "cache hit ratio",
          "first call per user p50 / p99 ms",
          "later calls p50 / p99 ms",
          "calls/s",
          "errors",
        ],
        rows: results.map((r) => [
          r.broker,
          r.distinctUsers,
          r.kmsDecrypts,
          fmt(r.hitRatio, 3),
          `${fmt(r.firstCallP50Ms, 1)} / ${fmt(r.firstCallP99Ms, 1)}`,
          `${fmt(r.laterCallP50Ms, 1)} / ${fmt(r.laterCallP99Ms, 1)}`,
          fmt(r.callsPerSecond),
          r.errors,
        ]),
        notes: [
          "Decrypts are counted at the local KMS-protocol server; the replica's own start-up (one Decrypt of the pepper) is not in the count.",
          "A user's first call on a cold replica pays one KMS Decrypt (here 20 ms); concurrent first calls of one user share it.",
          `${fmt(calls / userCount)} calls per user on average (uniform random traffic, the same on both brokers). Throughput here is not the hot path's: no JIT warm-up, many users (section 1 has that).`,
        ],
      },
    ],
    checks: cold
      ? [
          {
            target: "KMS calls ≤ distinct users per cache period (cold replica)",
            measured: `${cold.kmsDecrypts} Decrypts for ${cold.distinctUsers} distinct users over ${cold.calls} calls`,
            met: cold.kmsDecrypts <= cold.distinctUsers && cold.errors === 0,
          },
        ]
      : [],
    errors: results.reduce((n, r) => n + r.errors, 0),
    data: { userCount, calls, kmsLatencyMs: KMS_LATENCY_MS, concurrency: CONCURRENCY, results },
  };
}
