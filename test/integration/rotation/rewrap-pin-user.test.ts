import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { AuditEvent } from "../../../src/audit/audit-event.js";
import { createDataKeyCache } from "../../../src/keys/data-key-cache.js";
import { createPinSessions } from "../../../src/keys/pin-sessions.js";
import { createUserDataKeys } from "../../../src/keys/user-data-keys.js";
import { deriveFingerprintKey } from "../../../src/keys/user-ref.js";
import { readKeyStatus } from "../../../src/rotation/key-status.js";
import { createRewrapJob } from "../../../src/rotation/rewrap-job.js";
import { rotateUserDataKey } from "../../../src/rotation/user-key-rotation.js";
import { createSecretService } from "../../../src/secrets/secret-service.js";
import { createPinService } from "../../../src/sessions/pin-service.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
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

const PIN = "rotation pin 2468";

describeOnEachDatabase("a PIN user's key across key rotation (issue 14 item 4, %s)", (databaseKind) => {
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
    const audited: AuditEvent[] = [];

    /** A broker's PIN and secret services over the fixture's keyring, with their own memory. */
    function broker() {
      const pinSessions = createPinSessions({ idleMs: 60_000, maxEntries: 100 });
      const userDataKeys = createUserDataKeys({
        keyring: fixture.keyring,
        cache: createDataKeyCache({ maxAgeMs: 60_000, maxUses: 100_000, maxEntries: 1_000 }),
        pinSessions,
      });
      const pins = createPinService({
        db: database.db,
        keyring: fixture.keyring,
        userDataKeys,
        pinSessions,
        policy: { maxAttempts: 5, backoffMs: 0, lockoutMs: 600_000 },
        scryptLogN: 15,
        // The audit trail is not under test here; its events are kept to check they name no PIN.
        audit: { record: async (event) => void audited.push(event) },
      });
      const secrets = createSecretService({
        db: database.db,
        prepared: database.prepared,
        userDataKeys,
        fingerprintKey: deriveFingerprintKey(fixture.pepper),
      });
      return { pins, secrets };
    }
    const actor = { requestId: "rewrap-pin-test", callerKeyId: "test" };

    beforeEach(async () => {
      await emptyDatabase(database);
      fixture = await createRotationFixture(database, keyringKind);
      users = await fixture.seedUsers(3);
    });
    afterEach(async () => {
      await fixture.close();
    });

    it("I154 the master-key rewrap moves a PIN user's share without the PIN, and the secrets still open with it", async () => {
      const [pinUser] = users;
      if (pinUser === undefined) throw new Error("no seeded user");
      await broker().pins.setPin(pinUser.identity, PIN, undefined, actor, signal);
      const targetKeyId = await fixture.addMasterKey();

      const report = await createRewrapJob({
        db: database.db,
        keyring: fixture.keyring,
        logger: silentLogger,
        batchSize: 2,
        concurrency: 2,
        ratePerSecond: 10_000,
      }).run(targetKeyId);

      expect(report).toMatchObject({ failed: 0, remaining: 0 });
      expect(Object.fromEntries((await readKeyStatus(database.db)).users)).toEqual({
        [targetKeyId]: users.length,
      });
      await fixture.disableMasterKey(fixture.sourceKeyId);
      const after = broker();
      // Locked without the PIN, open with it, under the new master key only.
      expect(await unreadableSecrets(after.secrets, [pinUser])).not.toEqual([]);
      await after.pins.unlockSession(pinUser.identity, PIN, actor, signal);
      expect(await unreadableSecrets(after.secrets, users)).toEqual([]);
      expect(JSON.stringify(audited)).not.toContain(PIN);
    });

    it("I154 a PIN user's data key is not rotated without the PIN (FAILED_PRECONDITION), and stays readable", async () => {
      const [pinUser] = users;
      if (pinUser === undefined) throw new Error("no seeded user");
      const { pins, secrets } = broker();
      await pins.setPin(pinUser.identity, PIN, undefined, actor, signal);
      const refusal = await brokerErrorOf(
        rotateUserDataKey({
          db: database.db,
          keyring: fixture.keyring,
          userRef: pinUser.identity.userRef,
          signal,
        }),
      );
      expect(refusal.code).toBe("failed_precondition");
      expect(await unreadableSecrets(secrets, [pinUser])).toEqual([]);
    });
  });
});
