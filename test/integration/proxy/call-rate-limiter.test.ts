import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { isBrokerError } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import {
  type CallRateLimiter,
  createCallRateLimiter,
  maxBlockOf,
  type RateLimitBucket,
  type RateLimitStore,
} from "../../../src/proxy/call-rate-limiter.js";
import {
  deleteRateLimitLeasesBefore,
  leaseRateLimitTokens,
  rateLimitTokensUsed,
} from "../../../src/store/rate-limit-leases.repository.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

// Replicas are limiters that share nothing but the database: each one here is a separate
// createCallRateLimiter over the same real PGlite/Postgres, as two broker processes would be.

const MINUTE = 60_000;
// A fixed clock in the middle of a window, so no test straddles a boundary by accident.
const T0 = Date.UTC(2026, 0, 1, 12, 0, 30);
const never = new AbortController().signal;

const bucket = (key: string, limit: number, windowMs = MINUTE): RateLimitBucket => ({
  key,
  limit,
  windowMs,
  what: "this secret",
});

/** Takes one token; "ok" or the refusal's code. */
async function attempt(limiter: CallRateLimiter, buckets: readonly RateLimitBucket[]): Promise<string> {
  try {
    await limiter.take(buckets, never);
    return "ok";
  } catch (err) {
    if (isBrokerError(err)) return err.code;
    throw err;
  }
}

describeOnEachDatabase("call rate limiter across replicas (%s)", (kind) => {
  let database: TestDatabase;
  let clock: number;
  let leases: number;

  const storeOf = (db: TestDatabase): RateLimitStore => ({
    lease: (key, windowStart, block, limit) => {
      leases++;
      return leaseRateLimitTokens(db.prepared, key, windowStart, block, limit);
    },
    sweep: (before) => deleteRateLimitLeasesBefore(db.db, before),
  });
  const replica = (db: TestDatabase = database) =>
    createCallRateLimiter({
      store: storeOf(db),
      logger: createLogger({ level: "silent" }),
      now: () => clock,
    });

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await database?.close();
  });
  beforeEach(async () => {
    await database.truncate();
    clock = T0;
    leases = 0;
  });

  it("H105 admits exactly the limit per window across two replicas sharing one counter (overshoot 0)", async () => {
    const [a, b] = [replica(), replica()];
    const limit = bucket("s:shared-secret:*:m", 37);
    const outcomes: string[] = [];
    // Interleaved, and concurrent within each round: the replicas race for the same counter.
    for (let round = 0; round < 30; round++) {
      outcomes.push(...(await Promise.all([attempt(a, [limit]), attempt(b, [limit]), attempt(a, [limit])])));
    }
    expect(outcomes.filter((o) => o === "ok")).toHaveLength(37);
    expect(new Set(outcomes)).toEqual(new Set(["ok", "resource_exhausted"]));
    expect(await rateLimitTokensUsed(database.db, limit.key, T0 - (T0 % MINUTE))).toBe(37);
  });

  it("H105 admits every one of a burst of concurrent calls that stays within the limit", async () => {
    const limiter = replica();
    // 20/min: blocks of 1 to 2 tokens, so 20 concurrent calls need leases sized to the waiters.
    const limit = bucket("s:burst-secret:*:m", 20);
    const outcomes = await Promise.all(Array.from({ length: 20 }, () => attempt(limiter, [limit])));
    expect(outcomes).toEqual(Array(20).fill("ok"));
    expect(await attempt(limiter, [limit])).toBe("resource_exhausted");
  });

  it("H105 refuses with a retry delay that ends with the window, and admits again in the next one", async () => {
    const limiter = replica();
    const limit = bucket("s:retry-secret:*:m", 2);
    expect([await attempt(limiter, [limit]), await attempt(limiter, [limit])]).toEqual(["ok", "ok"]);
    const refused = await brokerErrorOf(Promise.resolve(limiter.take([limit], never)));
    expect(refused.code).toBe("resource_exhausted");
    expect(refused.message).toBe("rate limit reached for this secret; retry later");
    expect(refused.retryAfterMs).toBe(30_000);
    clock = T0 + 30_000;
    expect(await attempt(limiter, [limit])).toBe("ok");
  });

  it("H106 serves most calls from the leased block: far fewer statements than calls", async () => {
    const limiter = replica();
    const limit = bucket("s:busy-secret:*:m", 100_000);
    let fromMemory = 0;
    for (let i = 0; i < 5_000; i++) {
      const pending = limiter.take([limit], never);
      if (pending === undefined) fromMemory++;
      else await pending;
    }
    // Blocks start at limit/100 and double up to limit/10 (capped at 1000): 1000, 2000, 1000, 1000.
    expect(leases).toBeLessThanOrEqual(5);
    expect(fromMemory).toBeGreaterThanOrEqual(5_000 - leases);
  });

  it("H106 asks the counter only once a window is spent: refusals cost no statement", async () => {
    const limiter = replica();
    const limit = bucket("s:spent-secret:*:m", 3);
    for (let i = 0; i < 3; i++) expect(await attempt(limiter, [limit])).toBe("ok");
    expect(await attempt(limiter, [limit])).toBe("resource_exhausted");
    const after = leases;
    for (let i = 0; i < 50; i++) expect(await attempt(limiter, [limit])).toBe("resource_exhausted");
    expect(leases).toBe(after);
  });

  it("H107 takes a token from every bucket or from none: a refusal by one gives the others back", async () => {
    const limiter = replica();
    const wide = bucket("s:both-secret:*:m", 10);
    const transfer = bucket("s:both-secret:transfer:m", 1);
    expect(await attempt(limiter, [wide, transfer])).toBe("ok");
    expect(await attempt(limiter, [wide, transfer])).toBe("resource_exhausted");
    // The refused transfer did not use up a provider-wide token: 9 are left for other classes.
    const rest: string[] = [];
    for (let i = 0; i < 10; i++) rest.push(await attempt(limiter, [wide]));
    expect(rest.filter((o) => o === "ok")).toHaveLength(9);
  });

  it("H107 keeps separate counters per bucket key (one secret's limit is not another's)", async () => {
    const limiter = replica();
    for (let i = 0; i < 2; i++) expect(await attempt(limiter, [bucket("s:one:*:m", 2)])).toBe("ok");
    expect(await attempt(limiter, [bucket("s:one:*:m", 2)])).toBe("resource_exhausted");
    expect(await attempt(limiter, [bucket("s:two:*:m", 2)])).toBe("ok");
  });

  it("H108 without its database a replica serves one local block per window, then refuses UNAVAILABLE", async () => {
    const gone = await createTestDatabase(kind);
    const limiter = replica(gone);
    await gone.close();
    const limit = bucket("s:outage-secret:*:m", 50);
    const outcomes: string[] = [];
    for (let i = 0; i < 20; i++) outcomes.push(await attempt(limiter, [limit]));
    // The first block of a 50/min limit is 1 token: the conservative local allowance, no more.
    expect(outcomes.filter((o) => o === "ok")).toHaveLength(1);
    expect(outcomes.slice(1)).toEqual(Array(19).fill("unavailable"));
    expect(maxBlockOf(50)).toBe(5);
  });
});

describeOnEachDatabase("rate limit lease counter (%s)", (kind) => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await database?.close();
  });

  it("H105 never grants past the limit, however many leases race for the last tokens", async () => {
    const grants = await Promise.all(
      Array.from({ length: 40 }, () => leaseRateLimitTokens(database.prepared, "s:race:*:m", 0, 3, 50)),
    );
    expect(grants.reduce((a, b) => a + b, 0)).toBe(50);
    expect(grants.filter((g) => g === 2)).toHaveLength(1);
    expect(await rateLimitTokensUsed(database.db, "s:race:*:m", 0)).toBe(50);
  });

  it("H105 sweeps ended windows and keeps current ones", async () => {
    await leaseRateLimitTokens(database.prepared, "s:old:*:m", 1_000, 1, 5);
    await leaseRateLimitTokens(database.prepared, "s:new:*:m", 9_000, 1, 5);
    await deleteRateLimitLeasesBefore(database.db, 5_000);
    expect(await rateLimitTokensUsed(database.db, "s:old:*:m", 1_000)).toBe(0);
    expect(await rateLimitTokensUsed(database.db, "s:new:*:m", 9_000)).toBe(1);
  });
});

describe("rate limit block sizes", () => {
  it("H106 bounds what one replica may hold unused to a tenth of the limit (at most 1000)", () => {
    expect([maxBlockOf(5), maxBlockOf(60), maxBlockOf(6_000), maxBlockOf(1_000_000)]).toEqual([
      1, 6, 600, 1000,
    ]);
  });
});
