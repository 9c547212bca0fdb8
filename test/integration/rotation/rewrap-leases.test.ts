import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Keyring } from "../../../src/keys/keyring.js";
import { readKeyStatus } from "../../../src/rotation/key-status.js";
import { rewrapRangeStarts } from "../../../src/rotation/leased-row-source.js";
import { createRewrapJob, type RewrapJobDeps } from "../../../src/rotation/rewrap-job.js";
import {
  deleteFinishedRewrapRanges,
  ensureRewrapRanges,
  leaseRewrapRange,
  settleRewrapRange,
} from "../../../src/store/rewrap-ranges.repository.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";
import {
  createRotationFixture,
  emptyDatabase,
  type RotationFixture,
  type SeededUser,
  silentLogger,
  unreadableSecrets,
} from "./rotation-fixture.js";

// Issue 17 item 4: rewrap workers (jobs, in any number of processes) share one target through
// leased user_ref ranges and one total rate. Two jobs in this process stand for two processes:
// they share nothing but the database, exactly as two `keybroker rewrap` processes do.

const USERS = 40;
const RANGES = 8;

/** Every ReEncrypt, with the user it was for (hex user ref; "pepper" otherwise) and when. */
interface ReEncryptCall {
  readonly user: string;
  readonly at: number;
}

function recordReEncrypts(inner: Keyring, calls: ReEncryptCall[]): Keyring {
  return {
    ...inner,
    kind: inner.kind,
    currentKeyId: () => inner.currentKeyId(),
    reEncrypt(wrapped, context, destination, options) {
      calls.push({ user: context.user_ref ?? "pepper", at: Date.now() });
      return inner.reEncrypt(wrapped, context, destination, options);
    },
  };
}

describeOnEachDatabase("rewrap over leased ranges on %s", (databaseKind) => {
  let database: TestDatabase;
  let fixture: RotationFixture;
  let users: SeededUser[];
  let targetKeyId: string;
  let calls: ReEncryptCall[];

  beforeAll(async () => {
    database = await createTestDatabase(databaseKind);
  });

  afterAll(async () => {
    await database.close();
  });

  beforeEach(async () => {
    await emptyDatabase(database);
    fixture = await createRotationFixture(database, "aws-kms");
    users = await fixture.seedUsers(USERS, 1);
    targetKeyId = await fixture.addMasterKey();
    calls = [];
  });

  afterEach(async () => {
    await fixture.close();
  });

  const job = (owner: string, overrides: Partial<RewrapJobDeps> = {}) =>
    createRewrapJob({
      db: database.db,
      keyring: recordReEncrypts(fixture.keyring, calls),
      logger: silentLogger,
      batchSize: 4,
      concurrency: 3,
      ratePerSecond: 10_000,
      owner,
      ranges: RANGES,
      ...overrides,
    });

  const userCalls = () => calls.filter((c) => c.user !== "pepper");

  it("L275 two rewrap jobs on one target split the users between them: each user's key is re-encrypted exactly once in all", async () => {
    const [a, b] = await Promise.all([job("worker a").run(targetKeyId), job("worker b").run(targetKeyId)]);

    const perUser = new Map<string, number>();
    for (const c of userCalls()) perUser.set(c.user, (perUser.get(c.user) ?? 0) + 1);
    expect(perUser.size).toBe(USERS);
    expect([...perUser.values()].every((n) => n === 1)).toBe(true);
    // Both took part (8 ranges, 3 rows in flight each), and together they moved everything.
    expect(a.rewrapped + b.rewrapped).toBeGreaterThanOrEqual(USERS + 1);
    expect(a.remaining + b.remaining).toBe(0);
    const status = await readKeyStatus(database.db);
    expect(Object.fromEntries(status.users)).toEqual({ [targetKeyId]: USERS });
    expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
  });

  it("L276 a range leased by a worker that crashed is left alone until its lease expires, then taken over and finished", async () => {
    const ttlMs = 1_500;
    // The crashed worker: it leased the first range, then never renewed it.
    await ensureRewrapRanges(database.db, targetKeyId, rewrapRangeStarts(RANGES));
    const crashed = await leaseRewrapRange(database.db, { targetKeyId, owner: "crashed worker", ttlMs });
    const leasedAt = Date.now();
    expect(crashed).toBeDefined();
    const inCrashedRange = (user: string) => {
      const ref = Buffer.from(user, "hex");
      return crashed?.end === undefined || Buffer.compare(ref, crashed.end) < 0;
    };

    const report = await job("survivor", { leaseTtlMs: ttlMs }).run(targetKeyId);

    expect(report).toMatchObject({ remaining: 0, failed: 0, stopped: false });
    const taken = userCalls().filter((c) => inCrashedRange(c.user));
    expect(taken.length).toBeGreaterThan(0);
    // Not one of them was touched while the crashed worker's lease was live.
    for (const c of taken) expect(c.at).toBeGreaterThanOrEqual(leasedAt + ttlMs - 100);
    const status = await readKeyStatus(database.db);
    expect(Object.fromEntries(status.users)).toEqual({ [targetKeyId]: USERS });
    expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
  });

  it("L277 the rate limit holds in total: two jobs at 15 calls/s together never pass 15 KMS calls in any one-second window", async () => {
    const rate = 15;
    const started = Date.now();

    await Promise.all([
      job("worker a", { ratePerSecond: rate }).run(targetKeyId),
      job("worker b", { ratePerSecond: rate }).run(targetKeyId),
    ]);

    const perWindow = new Map<number, number>();
    for (const c of calls) {
      const window = Math.floor(c.at / 1_000);
      perWindow.set(window, (perWindow.get(window) ?? 0) + 1);
    }
    expect(calls.length).toBeGreaterThanOrEqual(USERS + 1);
    expect(Math.max(...perWindow.values())).toBeLessThanOrEqual(rate);
    // 41+ calls at 15 a window need at least three windows: more than a second, never two jobs' double rate.
    expect(perWindow.size).toBeGreaterThanOrEqual(3);
    expect(Date.now() - started).toBeGreaterThan(1_000);
  });

  const ranges = async (target = targetKeyId) =>
    database.db
      .selectFrom("rewrap_ranges")
      .select(["owner", "done_at"])
      .where("target_key_id", "=", target)
      .execute();

  describe("the ranges of a target", () => {
    it("L291 are kept when a job is stopped, so the next run resumes from them, and deleted once a run finishes them all", async () => {
      const stop = new AbortController();
      const first = await job("first", {
        onProgress: ({ done }) => {
          if (done >= 10) stop.abort();
        },
      }).run(targetKeyId, { signal: stop.signal });
      expect(first.stopped).toBe(true);
      const kept = await ranges();
      expect(kept).toHaveLength(RANGES);
      expect(kept.filter((r) => r.owner !== null)).toEqual([]);
      // Whether a range happened to finish before the stop depends on timing (the rows done may
      // all sit in ranges still in progress); that not all are done is what must hold.
      expect(kept.every((r) => r.done_at !== null)).toBe(false);

      const second = await job("second").run(targetKeyId);

      expect(second).toMatchObject({ remaining: 0, stopped: false });
      expect(await ranges()).toEqual([]);
      const perUser = new Map<string, number>();
      for (const c of userCalls()) perUser.set(c.user, (perUser.get(c.user) ?? 0) + 1);
      expect(perUser.size).toBe(USERS);
      expect([...perUser.values()].every((n) => n === 1)).toBe(true);
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
    });

    it("L291 are deleted only when every one of them is done, and another target's are left alone", async () => {
      const other = "local:99";
      await ensureRewrapRanges(database.db, targetKeyId, rewrapRangeStarts(RANGES));
      await ensureRewrapRanges(database.db, other, rewrapRangeStarts(RANGES));
      const finish = async (target: string) => {
        const range = await leaseRewrapRange(database.db, { targetKeyId: target, owner: "w", ttlMs: 60_000 });
        if (range === undefined) throw new Error("no range left to lease");
        await settleRewrapRange(database.db, {
          targetKeyId: target,
          owner: "w",
          start: range.start,
          done: true,
        });
      };
      for (let i = 0; i < RANGES - 1; i += 1) await finish(targetKeyId);
      for (let i = 0; i < RANGES; i += 1) await finish(other);
      // The last range leased by a worker still walking it: nothing of the target may go.
      const last = await leaseRewrapRange(database.db, { targetKeyId, owner: "walking", ttlMs: 60_000 });

      expect(await deleteFinishedRewrapRanges(database.db, targetKeyId)).toBe(0);
      expect(await ranges()).toHaveLength(RANGES);

      await settleRewrapRange(database.db, {
        targetKeyId,
        owner: "walking",
        start: last?.start ?? Buffer.alloc(0),
        done: true,
      });
      expect(await deleteFinishedRewrapRanges(database.db, targetKeyId)).toBe(RANGES);
      expect(await ranges()).toEqual([]);
      expect(await ranges(other)).toHaveLength(RANGES);
    });
  });

  describe("a stopped job", () => {
    it("L278 hands its range back at once, so the next job resumes without waiting for the lease to expire", async () => {
      const stop = new AbortController();
      const first = await job("first", {
        leaseTtlMs: 60_000,
        onProgress: ({ done }) => {
          if (done >= 10) stop.abort();
        },
      }).run(targetKeyId, { signal: stop.signal });
      expect(first.stopped).toBe(true);

      const started = Date.now();
      const second = await job("second", { leaseTtlMs: 60_000 }).run(targetKeyId);

      expect(second.remaining).toBe(0);
      expect(Date.now() - started).toBeLessThan(30_000); // far below the 60 s lease
      const perUser = new Map<string, number>();
      for (const c of userCalls()) perUser.set(c.user, (perUser.get(c.user) ?? 0) + 1);
      expect(perUser.size).toBe(USERS);
      expect([...perUser.values()].every((n) => n === 1)).toBe(true);
    });
  });
});
