import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { Keyring } from "../../../src/keys/keyring.js";
import { loadOrCreatePepper } from "../../../src/keys/pepper.js";
import { createRetiredKeyGuard } from "../../../src/keys/retired-key-guard.js";
import { userKeyContext } from "../../../src/keys/user-data-keys.js";
import { createRewrapJob } from "../../../src/rotation/rewrap-job.js";
import { parsePutSecret } from "../../../src/secrets/secret-input.js";
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
} from "../rotation/rotation-fixture.js";

/** Keeps every plaintext the real keyring hands out, to check the guard zeroed it. */
function keepingPlaintexts(inner: Keyring, kept: Buffer[]): Keyring {
  return {
    kind: inner.kind,
    currentKeyId: () => inner.currentKeyId(),
    async generateDataKey(context, options) {
      const generated = await inner.generateDataKey(context, options);
      kept.push(generated.plaintext);
      return generated;
    },
    async decrypt(wrapped, context, options) {
      const unwrapped = await inner.decrypt(wrapped, context, options);
      kept.push(unwrapped.plaintext);
      return unwrapped;
    },
    reEncrypt: (wrapped, context, destination, options) =>
      inner.reEncrypt(wrapped, context, destination, options),
  };
}

const allZero = (buffer: Buffer) => buffer.every((byte) => byte === 0);

describeOnEachDatabase("retired master key guard on %s", (databaseKind) => {
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
    let kept: Buffer[];
    let guarded: Keyring;

    beforeEach(async () => {
      await emptyDatabase(database);
      fixture = await createRotationFixture(database, keyringKind);
      users = await fixture.seedUsers(3);
      targetKeyId = await fixture.addMasterKey();
      kept = [];
      // The broker restarted on the new key, with only the new key accepted.
      guarded = createRetiredKeyGuard(keepingPlaintexts(await fixture.pointAt(targetKeyId), kept), {
        acceptedKeyIds: [targetKeyId],
      });
    });

    afterEach(async () => {
      await fixture.close();
    });

    it("refuses a data key still wrapped under a retired master key, and zeroes what it unwrapped", async () => {
      const [user] = users;
      const [secretId] = user?.secrets.keys() ?? [];
      if (user === undefined || secretId === undefined) throw new Error("nothing seeded");

      const err = await brokerErrorOf(fixture.replica(guarded).open(user.identity, secretId, signal));

      expect(err.code).toBe("failed_precondition");
      expect(err.message).toBe("data key wrapped under a retired master key");
      // M2: the row's key is checked before the KMS is asked, so nothing was unwrapped at all.
      expect(kept).toHaveLength(0);
    });

    it("M2 zeroes and refuses a data key the keyring reports under a master key that is not accepted", async () => {
      const [user] = users;
      if (user === undefined) throw new Error("nothing seeded");
      const context = userKeyContext(user.identity.userRef);
      const generated = await fixture.keyring.generateDataKey(context);
      generated.plaintext.fill(0);
      // A keyring below that answers under another key than the row names (it must not: defence in depth).
      const lying: Keyring = {
        ...fixture.keyring,
        currentKeyId: () => targetKeyId,
        async decrypt(wrapped, ctx, options) {
          const unwrapped = await fixture.keyring.decrypt(
            { ...wrapped, keyId: generated.keyId },
            ctx,
            options,
          );
          kept.push(unwrapped.plaintext);
          return { ...unwrapped, keyId: fixture.sourceKeyId };
        },
      };
      const guard = createRetiredKeyGuard(lying, { acceptedKeyIds: [targetKeyId] });

      const err = await brokerErrorOf(
        guard.decrypt({ wrapped: generated.wrapped, keyId: targetKeyId }, context),
      );

      expect(err.code).toBe("failed_precondition");
      expect(kept).toHaveLength(1);
      expect(kept.every(allZero)).toBe(true);
    });

    it("refuses to start on a pepper sealed under a retired master key", async () => {
      const err = await brokerErrorOf(loadOrCreatePepper(database.db, guarded));

      expect(err.code).toBe("failed_precondition");
    });

    it("serves every row once the rewrap has moved it to an accepted key", async () => {
      await createRewrapJob({
        db: database.db,
        keyring: fixture.keyring,
        logger: silentLogger,
        batchSize: 10,
        concurrency: 2,
        ratePerSecond: 1_000,
      }).run(targetKeyId);

      expect(await unreadableSecrets(fixture.replica(guarded), users)).toEqual([]);
      const pepper = await loadOrCreatePepper(database.db, guarded);
      expect(pepper.equals(fixture.pepper)).toBe(true);
      pepper.fill(0);
    });

    it("refuses to re-wrap anything onto a retired master key", async () => {
      const [user] = users;
      if (user === undefined) throw new Error("nothing seeded");
      const generated = await fixture.keyring.generateDataKey(userKeyContext(user.identity.userRef));
      generated.plaintext.fill(0);

      const err = await brokerErrorOf(
        guarded.reEncrypt(generated, userKeyContext(user.identity.userRef), fixture.sourceKeyId),
      );

      expect(err.code).toBe("failed_precondition");
    });

    it("cannot be built when the configured master key itself is not accepted", async () => {
      const err = await brokerErrorOf(
        (async () => createRetiredKeyGuard(fixture.keyring, { acceptedKeyIds: [targetKeyId] }))(),
      );

      expect(err.code).toBe("failed_precondition");
      expect(err.message).toContain("is not among the accepted master keys");
    });
  });

  describe("with the local keyring rotated past the accepted versions", () => {
    let fixture: RotationFixture;

    beforeEach(async () => {
      await emptyDatabase(database);
      fixture = await createRotationFixture(database, "local");
    });

    afterEach(async () => {
      await fixture.close();
    });

    it("refuses to wrap a new user's data key under a master key not yet accepted", async () => {
      const kept: Buffer[] = [];
      const guarded = createRetiredKeyGuard(keepingPlaintexts(fixture.keyring, kept), {
        acceptedKeyIds: [fixture.sourceKeyId],
      });
      await fixture.addMasterKey(); // local:2 becomes current in the file, but is not accepted

      const err = await brokerErrorOf(
        fixture
          .replica(guarded)
          .put(
            fixture.identity("auth0|new-user"),
            parsePutSecret({ secretId: "", provider: "binance", label: "main", fields: { api_key: "k" } }),
            signal,
          ),
      );

      expect(err.code).toBe("failed_precondition");
      expect(kept).toHaveLength(1);
      expect(kept.every(allZero)).toBe(true);
    });
  });
});
