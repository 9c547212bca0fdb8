/**
 * What the rate limits cost a proxied call (issue 13 item 6), against a real Postgres:
 * CPU µs per call for the policy lookup plus one token from a per-secret and a per-caller-key
 * bucket, leases to the shared counter included (amortised), and how many statements that took.
 *
 *   npx tsx bench/tools/rate-limit-cost.ts            (N=200000 calls by default)
 */
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { createCallRateLimiter } from "../../src/proxy/call-rate-limiter.js";
import { createRateLimitPolicy } from "../../src/proxy/rate-limit-policy.js";
import { openDatabase } from "../../src/store/database.js";
import { migrateToLatest } from "../../src/store/migrate.js";
import {
  deleteRateLimitLeasesBefore,
  leaseRateLimitTokens,
} from "../../src/store/rate-limit-leases.repository.js";
import { createThrowawayDatabase } from "../../test/support/throwaway-database.js";

const N = Number(process.env.N ?? 200_000);
const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

const throwaway = await createThrowawayDatabase(ADMIN_URL, "keybroker_ratelimit_bench");
const database = await openDatabase(
  {
    kind: "postgres",
    url: new Redacted(throwaway.url),
    maxConnections: 4,
    connectTimeoutMs: 5000,
    statementTimeoutMs: 30000,
  },
  createLogger({ level: "silent" }),
);
try {
  await migrateToLatest(database.db);
  let statements = 0;
  const limiter = createCallRateLimiter({
    store: {
      lease: (bucket, start, block, limit) => {
        statements++;
        return leaseRateLimitTokens(database.prepared, bucket, start, block, limit);
      },
      sweep: (before) => deleteRateLimitLeasesBefore(database.db, before),
    },
    logger: createLogger({ level: "silent" }),
  });
  const limited = createRateLimitPolicy({
    limitsOf: () => ({ perSecret: { perMinute: 10_000_000 }, perCallerKey: { perMinute: 10_000_000 } }),
    defaults: {},
  });
  const unlimited = createRateLimitPolicy({ limitsOf: () => undefined, defaults: {} });
  const signal = new AbortController().signal;
  const call = {
    provider: "binance",
    operationClass: "trade" as const,
    secretId: "3f7c1f0e-2b7a-4c55-9d07-1f9b0c1d2e3f",
    callerKeyId: "ck_0123456789abcdef",
  };

  async function measure(name: string, policy: typeof limited): Promise<void> {
    statements = 0;
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    for (let i = 0; i < N; i++) {
      const buckets = policy.bucketsFor(call);
      if (buckets.length === 0) continue;
      const pending = limiter.take(buckets, signal);
      if (pending !== undefined) await pending;
    }
    const c = process.cpuUsage(c0);
    const wall = performance.now() - t0;
    console.log(
      `${name.padEnd(44)} ${((c.user + c.system) / N).toFixed(2).padStart(6)} µs CPU/call  ${((wall * 1000) / N).toFixed(2).padStart(6)} µs wall/call  ${statements} statements for ${N} calls`,
    );
  }

  await measure("warm-up", limited);
  await measure("no limit configured (policy lookup only)", unlimited);
  await measure("per-secret + per-caller-key limits", limited);
} finally {
  await database.close();
  await throwaway.drop();
}
