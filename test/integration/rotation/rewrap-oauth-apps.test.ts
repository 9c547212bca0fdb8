import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Keyring } from "../../../src/keys/keyring.js";
import { createOAuthAppStore, type OAuthAppStore } from "../../../src/oauth/oauth-app-store.js";
import { readKeyStatus } from "../../../src/rotation/key-status.js";
import {
  createRewrapJob,
  type RewrapJobDeps,
  type RewrapProgress,
} from "../../../src/rotation/rewrap-job.js";
import { findOAuthApp } from "../../../src/store/oauth-apps.repository.js";
import { captureLogs, findLeaks } from "../../support/captured-logs.js";
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
  silentLogger,
  unreadableSecrets,
} from "./rotation-fixture.js";

const USERS = 5;
// Two providers' client secrets, sealed under the source master key before the rotation starts.
const APPS = [
  { provider: "github-oauth", clientId: "Iv1.0123abcd", secret: "gho-client-secret-0123456789abcdef" },
  { provider: "google-oauth", clientId: "123-abc.apps.example", secret: "GOCSPX-client-secret-fedcba9876" },
] as const;

describeOnEachDatabase("rewrap of the OAuth apps on %s", (databaseKind) => {
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

    const appStore = (keyring: Keyring): OAuthAppStore =>
      createOAuthAppStore({ db: database.db, keyring, isOAuthProvider: () => true });

    const job = (overrides: Partial<RewrapJobDeps> = {}) =>
      createRewrapJob({
        db: database.db,
        keyring: fixture.keyring,
        logger: silentLogger,
        batchSize: 3,
        concurrency: 2,
        ratePerSecond: 10_000,
        ...overrides,
      });

    /** The app's secret as a broker restarted on the target (the old key disabled) opens it. */
    async function openAfterRestart(provider: string): Promise<string> {
      const opened = await appStore(await fixture.pointAt(targetKeyId)).get(provider);
      try {
        return opened.clientSecret.toString("utf8");
      } finally {
        opened.clientSecret.fill(0);
      }
    }

    beforeEach(async () => {
      await emptyDatabase(database);
      fixture = await createRotationFixture(database, keyringKind);
      users = await fixture.seedUsers(USERS);
      const store = appStore(fixture.keyring);
      for (const app of APPS) await store.set(app.provider, app.clientId, Buffer.from(app.secret));
      targetKeyId = await fixture.addMasterKey();
    });

    afterEach(async () => {
      await fixture.close();
    });

    it("D42 re-wraps every OAuth app to the target: its secret still opens once the old master key is disabled", async () => {
      const before = await findOAuthApp(database.db, APPS[0].provider);
      expect(Object.fromEntries((await readKeyStatus(database.db)).oauthApps)).toEqual({
        [fixture.sourceKeyId]: APPS.length,
      });
      const logs = captureLogs();
      let last: RewrapProgress | undefined;

      const report = await job({
        logger: logs.logger,
        onProgress: (progress) => {
          last = progress;
        },
      }).run(targetKeyId);

      expect(report).toMatchObject({
        rewrapped: USERS + 1 + APPS.length,
        failed: 0,
        remaining: 0,
        stopped: false,
      });
      expect(last).toMatchObject({ done: USERS + 1 + APPS.length, total: USERS + 1 + APPS.length });
      const status = await readKeyStatus(database.db);
      expect(Object.fromEntries(status.oauthApps)).toEqual({ [targetKeyId]: APPS.length });
      // Only the wrapped key moved: same version, same ciphertext, same updated_at (the secret did not change).
      const after = await findOAuthApp(database.db, APPS[0].provider);
      expect(after).toMatchObject({ version: 1, masterKeyId: targetKeyId, updatedAt: before?.updatedAt });
      expect(
        Buffer.from(after?.secretCiphertext ?? []).equals(Buffer.from(before?.secretCiphertext ?? [])),
      ).toBe(true);

      await fixture.disableMasterKey(fixture.sourceKeyId);
      for (const app of APPS) expect(await openAfterRestart(app.provider)).toBe(app.secret);
      expect(await unreadableSecrets(fixture.replica(await fixture.pointAt(targetKeyId)), users)).toEqual([]);
      expect(
        findLeaks(
          logs.text(),
          APPS.map((app) => app.secret),
        ),
      ).toEqual([]);

      // Idempotent: a second run finds nothing to do and makes no KMS call.
      const reEncryptsBefore = fixture.calls.reEncrypt;
      expect(await job().run(targetKeyId)).toMatchObject({ rewrapped: 0, skipped: 0, remaining: 0 });
      expect(fixture.calls.reEncrypt).toBe(reEncryptsBefore);
    });

    it("D42 an `oauth-apps rotate` racing the rewrap is re-read and kept, never overwritten", async () => {
      const [raced] = APPS;
      const rotatedSecret = "gho-rotated-during-the-rewrap-0123456789";
      let rotated = false;
      // The real keyring; the first re-encryption of an app's key races a rotate of that app.
      const racing: Keyring = {
        kind: fixture.keyring.kind,
        currentKeyId: () => fixture.keyring.currentKeyId(),
        generateDataKey: (context, options) => fixture.keyring.generateDataKey(context, options),
        decrypt: (wrapped, context, options) => fixture.keyring.decrypt(wrapped, context, options),
        async reEncrypt(wrapped, context, destination, options) {
          const result = await fixture.keyring.reEncrypt(wrapped, context, destination, options);
          if (!rotated && context.provider === raced.provider) {
            rotated = true;
            await appStore(fixture.keyring).rotate(raced.provider, Buffer.from(rotatedSecret));
          }
          return result;
        },
      };

      const report = await job({ keyring: racing }).run(targetKeyId);

      expect(rotated).toBe(true);
      expect(report).toMatchObject({ failed: 0, remaining: 0 });
      // The rotate sealed version 2 under the keyring's current key: still the source for AWS
      // (the broker is not re-pointed here), so the re-read row was moved too; already the target
      // for the local keyring (a new version becomes current), so the re-read row was skipped.
      const rotatedOntoTarget = fixture.keyring.currentKeyId() === targetKeyId;
      expect(report.rewrapped + report.skipped).toBe(USERS + 1 + APPS.length);
      expect(report.skipped).toBe(rotatedOntoTarget ? 1 : 0);
      expect(await findOAuthApp(database.db, raced.provider)).toMatchObject({
        version: 2,
        masterKeyId: targetKeyId,
      });

      await fixture.disableMasterKey(fixture.sourceKeyId);
      expect(await openAfterRestart(raced.provider)).toBe(rotatedSecret);
      expect(await openAfterRestart(APPS[1].provider)).toBe(APPS[1].secret);
    });

    it("D42 --dry-run counts the OAuth apps in its plan and moves none of them", async () => {
      const plan = await job().plan(targetKeyId);
      expect(plan).toEqual({
        users: USERS,
        pepper: true,
        oauthApps: APPS.length,
        byKey: { [fixture.sourceKeyId]: USERS },
      });

      const report = await job().run(targetKeyId, { dryRun: true });

      expect(report).toMatchObject({ rewrapped: 0, remaining: USERS + 1 + APPS.length });
      expect(Object.fromEntries((await readKeyStatus(database.db)).oauthApps)).toEqual({
        [fixture.sourceKeyId]: APPS.length,
      });
    });
  });
});
