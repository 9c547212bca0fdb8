import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Keyring } from "../../../src/keys/keyring.js";
import { loadOrCreatePepper } from "../../../src/keys/pepper.js";
import { readKeyStatus } from "../../../src/rotation/key-status.js";
import { createRewrapJob, type RewrapJobDeps } from "../../../src/rotation/rewrap-job.js";
import { rotateUserDataKey } from "../../../src/rotation/user-key-rotation.js";
import { parsePutSecret } from "../../../src/secrets/secret-input.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";
import {
  createRotationFixture,
  emptyDatabase,
  KEYRING_KINDS,
  type RotationFixture,
  type SeededUser,
  signal,
  silentLogger,
  unreadableSecrets,
} from "./rotation-fixture.js";

const USERS = 50;

describeOnEachDatabase("rewrap job on %s", (databaseKind) => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase(databaseKind);
  });

  afterAll(async () => {
    await database.close();
  });

  describe.each(KEYRING_KINDS)("with the %s keyring", (keyringKind) => {
    let fixture: RotationFixture;
    let users: SeededUser[];
    let targetKeyId: string;

    const job = (overrides: Partial<RewrapJobDeps> = {}) =>
      createRewrapJob({
        db: database.db,
        keyring: fixture.keyring,
        logger: silentLogger,
        batchSize: 7, // several pages, and a last one that is not full
        concurrency: 4,
        ratePerSecond: 10_000,
        ...overrides,
      });

    beforeEach(async () => {
      await emptyDatabase(database);
      fixture = await createRotationFixture(database, keyringKind);
      users = await fixture.seedUsers(USERS);
      targetKeyId = await fixture.addMasterKey();
    });

    afterEach(async () => {
      await fixture.close();
    });

    it("plans, then moves every user's data key and the pepper to the target; every secret still opens", async () => {
      expect(await job().plan(targetKeyId)).toEqual({
        users: USERS,
        pepper: true,
        oauthApps: 0,
        byKey: { [fixture.sourceKeyId]: USERS },
      });

      const report = await job().run(targetKeyId);

      expect(report).toMatchObject({
        rewrapped: USERS + 1,
        skipped: 0,
        failed: 0,
        remaining: 0,
        stopped: false,
      });
      const status = await readKeyStatus(database.db);
      expect(Object.fromEntries(status.users)).toEqual({ [targetKeyId]: USERS });
      expect(status.pepperKeyId).toBe(targetKeyId);
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
    });

    it("is idempotent, and leaves everything readable once the old master key is disabled", async () => {
      await job().run(targetKeyId);
      const callsAfterFirstRun = fixture.calls.reEncrypt;

      const again = await job().run(targetKeyId);
      await fixture.disableMasterKey(fixture.sourceKeyId);

      expect(again).toMatchObject({ rewrapped: 0, skipped: 0, failed: 0, remaining: 0 });
      expect(fixture.calls.reEncrypt).toBe(callsAfterFirstRun);

      // A fresh replica: nothing cached, every data key unwrapped under the target.
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
      const pepper = await loadOrCreatePepper(database.db, fixture.keyring);
      expect(pepper.equals(fixture.pepper)).toBe(true);
      pepper.fill(0);
    });

    it("resumes after being stopped halfway, re-encrypting each row exactly once in all", async () => {
      const stop = new AbortController();
      const first = await job({
        onProgress: ({ done }) => {
          if (done >= 20) stop.abort();
        },
      }).run(targetKeyId, { signal: stop.signal });

      expect(first.stopped).toBe(true);
      expect(first.rewrapped).toBeGreaterThanOrEqual(20);
      expect(first.remaining).toBe(USERS + 1 - first.rewrapped);
      // Every row written so far is valid: half-moved state is readable.
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);

      const second = await job().run(targetKeyId);

      expect(second.rewrapped).toBe(USERS + 1 - first.rewrapped);
      expect(second.remaining).toBe(0);
      expect(fixture.calls.reEncrypt).toBe(USERS + 1);
      if (fixture.kms !== undefined) expect(fixture.kms.callCount("ReEncrypt")).toBe(USERS + 1);
      await fixture.disableMasterKey(fixture.sourceKeyId);
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
    });

    it("serves reads and writes during the rewrap without a single failure", async () => {
      const service = fixture.replica();
      const failures: unknown[] = [];
      let served = 0;
      let running = true;
      const traffic = async (worker: number) => {
        for (let i = 0; running && i < 10_000; i += 1) {
          const user = users[(worker * 7 + i) % users.length];
          const [id] = user?.secrets.keys() ?? [];
          if (user === undefined || id === undefined) continue;
          try {
            if (i % 3 === 0) {
              const apiKey = `during-rewrap-${worker}-${i}`;
              await service.put(
                user.identity,
                parsePutSecret({ secretId: id, provider: "binance", label: "", fields: { api_key: apiKey } }),
                signal,
              );
              user.secrets.set(id, apiKey);
            } else {
              const opened = await service.open(user.identity, id, signal);
              for (const field of opened.fields.values()) field.fill(0);
            }
            served += 1;
          } catch (err) {
            failures.push(err);
          }
        }
      };
      const clients = [0, 1, 2].map((worker) => traffic(worker));

      const report = await job({ concurrency: 2, ratePerSecond: 500 }).run(targetKeyId);
      running = false;
      await Promise.all(clients);

      expect(failures).toEqual([]);
      expect(served).toBeGreaterThan(10);
      expect(report).toMatchObject({ failed: 0, remaining: 0 });
      await fixture.disableMasterKey(fixture.sourceKeyId);
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
    });

    it("re-reads a row that changed under it and never overwrites the change", async () => {
      const victim = users[3];
      if (victim === undefined) throw new Error("no user to rotate");
      let rotated = false;
      // The real keyring; the first re-encryption of the victim's key races a data-key rotation.
      const racing: Keyring = {
        kind: fixture.keyring.kind,
        currentKeyId: () => fixture.keyring.currentKeyId(),
        generateDataKey: (context, options) => fixture.keyring.generateDataKey(context, options),
        decrypt: (wrapped, context, options) => fixture.keyring.decrypt(wrapped, context, options),
        async reEncrypt(wrapped, context, destination, options) {
          const result = await fixture.keyring.reEncrypt(wrapped, context, destination, options);
          if (!rotated && context.user_ref === victim.identity.userRef.toString("hex")) {
            rotated = true;
            await rotateUserDataKey({
              db: database.db,
              keyring: fixture.keyring,
              userRef: victim.identity.userRef,
              signal,
            });
          }
          return result;
        },
      };

      const report = await job({ keyring: racing }).run(targetKeyId);

      expect(rotated).toBe(true);
      // The rotation wraps the new data key under the current master key: still the source
      // for AWS (the broker is not re-pointed here), already the target for the local keyring
      // (a new version becomes current), in which case the re-read row needs nothing more.
      const rotatedOntoTarget = fixture.keyring.currentKeyId() === targetKeyId;
      expect(report).toMatchObject({
        rewrapped: rotatedOntoTarget ? USERS : USERS + 1,
        skipped: rotatedOntoTarget ? 1 : 0,
        failed: 0,
        remaining: 0,
      });
      // The stale re-encryption was discarded, never stored over the rotated key.
      expect(fixture.calls.reEncrypt).toBe(rotatedOntoTarget ? USERS + 1 : USERS + 2);
      await fixture.disableMasterKey(fixture.sourceKeyId);
      expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
    });
  });
});
