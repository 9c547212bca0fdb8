import { sql } from "kysely";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { readKeyStatus } from "../../../src/rotation/key-status.js";
import {
  createRewrapJob,
  type RewrapJobDeps,
  type RewrapProgress,
} from "../../../src/rotation/rewrap-job.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
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

const USERS = 20;
// Short backoff so the suite stays fast; the shape (exponential, jittered, bounded) is the job's.
// Enough attempts for every injected throttle to land on one call and still not fail it.
const FAST_RETRY = { attempts: 20, baseDelayMs: 5, maxDelayMs: 50 };

describeOnEachDatabase("rewrap job under KMS faults on %s", (databaseKind) => {
  let database: TestDatabase;
  let fixture: RotationFixture;
  let users: SeededUser[];
  let targetKeyId: string;

  const job = (overrides: Partial<RewrapJobDeps> = {}) =>
    createRewrapJob({
      db: database.db,
      keyring: fixture.keyring,
      logger: silentLogger,
      batchSize: 8,
      concurrency: 4,
      ratePerSecond: 10_000,
      retry: FAST_RETRY,
      ...overrides,
    });

  beforeAll(async () => {
    database = await createTestDatabase(databaseKind);
  });

  afterAll(async () => {
    await database.close();
  });

  describe("with AWS KMS", () => {
    beforeEach(async () => {
      await emptyDatabase(database);
      // One attempt per SDK call: every throttle reaches the job's own backoff.
      fixture = await createRotationFixture(database, "aws-kms", { kmsMaxAttempts: 1 });
      users = await fixture.seedUsers(USERS);
      targetKeyId = await fixture.addMasterKey();
    });

    afterEach(async () => {
      await fixture.close();
    });

    it("slows down when KMS throttles it, and still finishes every row", async () => {
      const kms = fixture.kms;
      if (kms === undefined) throw new Error("aws fixture without a KMS server");
      kms.setFaults({ throttleNext: 15 });

      const report = await job().run(targetKeyId);

      expect(report).toMatchObject({ rewrapped: USERS + 1, failed: 0, remaining: 0 });
      expect(report.retries).toBe(15);
      // Every throttled call was retried: 15 refused + one success per row.
      expect(kms.callCount("ReEncrypt")).toBe(USERS + 1 + 15);
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
    });

    it("stops with failed_precondition when the target key is disabled, and writes nothing", async () => {
      await fixture.disableMasterKey(targetKeyId);

      const err = await brokerErrorOf(job().run(targetKeyId));

      expect(err.code).toBe("failed_precondition");
      expect(err.message).toMatch(/^rewrap stopped: master key is not usable .*run again to resume$/);
      const status = await readKeyStatus(database.db);
      expect(Object.fromEntries(status.users)).toEqual({ [fixture.sourceKeyId]: USERS });
      expect(status.pepperKeyId).toBe(fixture.sourceKeyId);
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
    });

    it("resumes once the target key is enabled again", async () => {
      await fixture.disableMasterKey(targetKeyId);
      await brokerErrorOf(job().run(targetKeyId));
      fixture.kms?.enableKey(targetKeyId);

      const report = await job().run(targetKeyId);

      expect(report).toMatchObject({ rewrapped: USERS + 1, remaining: 0 });
    });

    it("stops with unavailable when KMS stays down through every retry", async () => {
      fixture.kms?.setFaults({ failNext: 1_000 });

      const err = await brokerErrorOf(job().run(targetKeyId));

      expect(err.code).toBe("unavailable");
      expect(err.message).toContain("stayed unavailable");
      expect(Object.fromEntries((await readKeyStatus(database.db)).users)).toEqual({
        [fixture.sourceKeyId]: USERS,
      });
    });

    it("counts a tampered wrapped key as failed, leaves it unchanged and moves every other row", async () => {
      const victim = users[5];
      if (victim === undefined) throw new Error("no user to tamper with");
      // Another user's wrapped key under the victim's row: its encryption context does not match.
      await sql`update users set wrapped_data_key = (select wrapped_data_key from users where user_ref <> ${victim.identity.userRef} limit 1) where user_ref = ${victim.identity.userRef}`.execute(
        database.db,
      );
      const progress: RewrapProgress[] = [];

      const report = await job({ onProgress: (p) => progress.push(p) }).run(targetKeyId);

      expect(report).toMatchObject({ rewrapped: USERS, failed: 1, remaining: 1 });
      expect(Object.fromEntries((await readKeyStatus(database.db)).users)).toEqual({
        [fixture.sourceKeyId]: 1,
        [targetKeyId]: USERS - 1,
      });
      expect(progress.at(-1)).toMatchObject({ done: USERS + 1, total: USERS + 1 });
      const others = users.filter((u) => u !== victim);
      expect(await unreadableSecrets(fixture.replica(), others)).toEqual([]);
    });
  });

  describe("with the local keyring", () => {
    beforeEach(async () => {
      await emptyDatabase(database);
      fixture = await createRotationFixture(database, "local");
      users = await fixture.seedUsers(USERS);
    });

    afterEach(async () => {
      await fixture.close();
    });

    it("stops with failed_precondition when the target version is disabled", async () => {
      const disabled = await fixture.addMasterKey();
      await fixture.addMasterKey(); // a later version is current, so `disabled` may be disabled
      await fixture.disableMasterKey(disabled);

      const err = await brokerErrorOf(job().run(disabled));

      expect(err.code).toBe("failed_precondition");
      expect(err.message).toContain(`master key ${disabled} is disabled`);
      expect((await readKeyStatus(database.db)).pepperKeyId).toBe(fixture.sourceKeyId);
    });

    it("refuses a target that is not a local key id before touching any row", async () => {
      const err = await brokerErrorOf(job().run("alias/not-local"));

      expect(err.code).toBe("failed_precondition");
      expect(Object.fromEntries((await readKeyStatus(database.db)).users)).toEqual({
        [fixture.sourceKeyId]: USERS,
      });
    });
  });
});
