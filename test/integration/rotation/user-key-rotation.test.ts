import { sql } from "kysely";
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { open } from "../../../src/crypto/envelope.js";
import { BrokerError } from "../../../src/errors.js";
import type { Keyring } from "../../../src/keys/keyring.js";
import { userKeyContext } from "../../../src/keys/user-data-keys.js";
import { rotateUserDataKey } from "../../../src/rotation/user-key-rotation.js";
import { parsePutSecret } from "../../../src/secrets/secret-input.js";
import { asBuffer } from "../../../src/store/bytes.js";
import { findUserKey } from "../../../src/store/users.repository.js";
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
  signal,
  unreadableSecrets,
} from "./rotation-fixture.js";

/** The first page at the default size: every secret these tests store. */
const ALL = { provider: undefined, pageSize: 0, pageToken: "" };

interface StoredVersion {
  secret_id: string;
  provider: string;
  version: number;
  ciphertext: Uint8Array;
  hint_ciphertext: Uint8Array;
}

/** A gate a test opens when it chooses: `reached` once someone waits at it. */
function createGate(): { reached: Promise<void>; wait(): Promise<void>; open(): void } {
  let arrive = () => {};
  let release = () => {};
  const reached = new Promise<void>((resolve) => {
    arrive = resolve;
  });
  const opened = new Promise<void>((resolve) => {
    release = resolve;
  });
  return {
    reached,
    wait() {
      arrive();
      return opened;
    },
    open: () => release(),
  };
}

describeOnEachDatabase("user data-key rotation on %s", (databaseKind) => {
  let database: TestDatabase;
  let fixture: RotationFixture;
  let users: SeededUser[];
  let alice: SeededUser;

  beforeAll(async () => {
    database = await createTestDatabase(databaseKind);
  });

  afterAll(async () => {
    await database.close();
  });

  beforeEach(async () => {
    await emptyDatabase(database);
    fixture = await createRotationFixture(database, "aws-kms");
    // Four secrets each; every second one has two versions.
    users = await fixture.seedUsers(3, 4);
    const first = users[0];
    if (first === undefined) throw new Error("no user seeded");
    alice = first;
  });

  afterEach(async () => {
    await fixture.close();
  });

  const versionsOf = async (user: SeededUser) =>
    (
      await sql<StoredVersion>`
        select v.secret_id, s.provider, v.version, v.ciphertext, v.hint_ciphertext
          from secret_versions v join secrets s on s.id = v.secret_id
         where s.user_ref = ${user.identity.userRef}
         order by v.secret_id, v.version`.execute(database.db)
    ).rows;

  const unwrapStored = async (user: SeededUser): Promise<Buffer> => {
    const stored = await findUserKey(database.db, user.identity.userRef);
    if (stored === undefined) throw new Error("user row missing");
    const { plaintext } = await fixture.keyring.decrypt(
      { wrapped: asBuffer(stored.wrappedDataKey), keyId: stored.masterKeyId },
      userKeyContext(user.identity.userRef),
    );
    return plaintext;
  };

  const opensUnder = (key: Buffer, user: SeededUser, row: StoredVersion, part: "fields" | "hint") => {
    const binding = {
      secretId: row.secret_id,
      userRef: user.identity.userRef,
      provider: row.provider,
      version: row.version,
      part,
      // Written through the service, so head-bound (catalogue L1); a rotation keeps them so.
      headBound: true,
    };
    try {
      open(key, part === "fields" ? row.ciphertext : row.hint_ciphertext, binding).fill(0);
      return true;
    } catch {
      return false;
    }
  };

  it("re-seals every version of every secret under a new data key the old key cannot open", async () => {
    const oldKey = await unwrapStored(alice);
    const before = await findUserKey(database.db, alice.identity.userRef);

    const rotated = await rotateUserDataKey({
      db: database.db,
      keyring: fixture.keyring,
      userRef: alice.identity.userRef,
      signal,
    });

    const rows = await versionsOf(alice);
    expect(rows).toHaveLength(6); // 4 secrets, 2 of them with a second version
    expect(rotated).toEqual({ dataKeyVersion: 2, versionsResealed: 6, masterKeyId: fixture.sourceKeyId });
    const newKey = await unwrapStored(alice);
    expect(newKey.equals(oldKey)).toBe(false);
    for (const row of rows) {
      for (const part of ["fields", "hint"] as const) {
        expect(opensUnder(oldKey, alice, row, part)).toBe(false);
        expect(opensUnder(newKey, alice, row, part)).toBe(true);
      }
    }
    const after = await findUserKey(database.db, alice.identity.userRef);
    expect(after).toMatchObject({ dataKeyVersion: 2, encryptions: 12, masterKeyId: fixture.sourceKeyId });
    expect(
      asBuffer(after?.wrappedDataKey ?? Buffer.alloc(0)).equals(
        asBuffer(before?.wrappedDataKey ?? Buffer.alloc(0)),
      ),
    ).toBe(false);
    oldKey.fill(0);
    newKey.fill(0);
  });

  it("keeps every secret readable, with the same values and hints, and leaves other users alone", async () => {
    const bob = users[1];
    if (bob === undefined) throw new Error("no second user");
    const bobBefore = await versionsOf(bob);
    const listedBefore = (await fixture.replica().list(alice.identity, ALL, signal)).secrets;

    await rotateUserDataKey({
      db: database.db,
      keyring: fixture.keyring,
      userRef: alice.identity.userRef,
      signal,
    });

    expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
    const listedAfter = (await fixture.replica().list(alice.identity, ALL, signal)).secrets;
    expect(listedAfter.map((s) => [s.id, s.version, s.hint, s.fingerprint])).toEqual(
      listedBefore.map((s) => [s.id, s.version, s.hint, s.fingerprint]),
    );
    expect(await versionsOf(bob)).toEqual(bobBefore);
  });

  it("forgets the old key in the caller's data-key cache", async () => {
    const forgotten: Buffer[] = [];

    await rotateUserDataKey({
      db: database.db,
      keyring: fixture.keyring,
      userRef: alice.identity.userRef,
      signal,
      forget: (userRef) => forgotten.push(userRef),
    });

    expect(forgotten).toEqual([alice.identity.userRef]);
  });

  it("changes nothing when one stored ciphertext does not authenticate", async () => {
    const [first] = await versionsOf(alice);
    if (first === undefined) throw new Error("no version");
    const tampered = Buffer.from(first.ciphertext);
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
    await sql`update secret_versions set ciphertext = ${tampered} where secret_id = ${first.secret_id} and version = ${first.version}`.execute(
      database.db,
    );
    const before = await versionsOf(alice);

    const err = await brokerErrorOf(
      rotateUserDataKey({
        db: database.db,
        keyring: fixture.keyring,
        userRef: alice.identity.userRef,
        signal,
      }),
    );

    expect(err.code).toBe("data_loss");
    expect(await versionsOf(alice)).toEqual(before);
    expect(await findUserKey(database.db, alice.identity.userRef)).toMatchObject({ dataKeyVersion: 1 });
  });

  it("L1 refuses to re-sign a rolled-back version pointer and changes nothing", async () => {
    const twoVersions = (await versionsOf(alice)).find((v) => v.version === 2);
    if (twoVersions === undefined) throw new Error("no secret with two versions");
    await sql`update secrets set current_version = 1 where id = ${twoVersions.secret_id}`.execute(
      database.db,
    );
    const before = await versionsOf(alice);

    const err = await brokerErrorOf(
      rotateUserDataKey({
        db: database.db,
        keyring: fixture.keyring,
        userRef: alice.identity.userRef,
        signal,
      }),
    );

    expect(err.code).toBe("data_loss");
    expect(await versionsOf(alice)).toEqual(before);
    expect(await findUserKey(database.db, alice.identity.userRef)).toMatchObject({ dataKeyVersion: 1 });
    // Put back, the pointer still verifies: the rotation re-bound nothing.
    await sql`update secrets set current_version = 2 where id = ${twoVersions.secret_id}`.execute(
      database.db,
    );
    expect(await unreadableSecrets(fixture.replica(), [alice])).toEqual([]);
  });

  it("L1 re-binds every head under the new key, so a rollback is still detected after a rotation", async () => {
    const twoVersions = (await versionsOf(alice)).find((v) => v.version === 2);
    if (twoVersions === undefined) throw new Error("no secret with two versions");

    await rotateUserDataKey({
      db: database.db,
      keyring: fixture.keyring,
      userRef: alice.identity.userRef,
      signal,
    });
    expect(await unreadableSecrets(fixture.replica(), [alice])).toEqual([]);

    await sql`update secrets set current_version = 1 where id = ${twoVersions.secret_id}`.execute(
      database.db,
    );
    const err = await brokerErrorOf(fixture.replica().open(alice.identity, twoVersions.secret_id, signal));
    expect(err.code).toBe("data_loss");
  });

  it("H93 refuses to re-sign a widened grant and changes nothing", async () => {
    const [first] = await versionsOf(alice);
    if (first === undefined) throw new Error("no secret seeded");
    await sql`update secrets set operation_grant = ${["read", "transfer"]} where id = ${first.secret_id}`.execute(
      database.db,
    );
    const before = await versionsOf(alice);

    const err = await brokerErrorOf(
      rotateUserDataKey({
        db: database.db,
        keyring: fixture.keyring,
        userRef: alice.identity.userRef,
        signal,
      }),
    );

    expect(err.code).toBe("data_loss");
    expect(await versionsOf(alice)).toEqual(before);
    expect(await findUserKey(database.db, alice.identity.userRef)).toMatchObject({ dataKeyVersion: 1 });
  });

  it("H93 keeps every grant bound under the new key, so a widening after a rotation is still detected", async () => {
    const [first] = await versionsOf(alice);
    if (first === undefined) throw new Error("no secret seeded");
    const grantOf = async () =>
      (
        await database.db
          .selectFrom("secrets")
          .select("operation_grant")
          .where("id", "=", first.secret_id)
          .executeTakeFirstOrThrow()
      ).operation_grant;
    const grantBefore = await grantOf();

    await rotateUserDataKey({
      db: database.db,
      keyring: fixture.keyring,
      userRef: alice.identity.userRef,
      signal,
    });
    expect(await unreadableSecrets(fixture.replica(), [alice])).toEqual([]);
    expect(await grantOf()).toEqual(grantBefore);

    await sql`update secrets set operation_grant = ${["transfer"]} where id = ${first.secret_id}`.execute(
      database.db,
    );
    const err = await brokerErrorOf(fixture.replica().open(alice.identity, first.secret_id, signal));
    expect(err.code).toBe("data_loss");
  });

  it("answers not_found for a user without a data key", async () => {
    const err = await brokerErrorOf(
      rotateUserDataKey({
        db: database.db,
        keyring: fixture.keyring,
        userRef: fixture.identity("auth0|nobody").userRef,
        signal,
      }),
    );

    expect(err.code).toBe("not_found");
  });

  it("neither loses nor seals under the old key a PutSecret that raced the rotation", async () => {
    // The put unwraps the user's current key, then pauses (at the KMS answer) while the
    // rotation commits; then it seals and stores its new version.
    const gate = createGate();
    let paused = false;
    const pausing: Keyring = {
      kind: fixture.keyring.kind,
      currentKeyId: () => fixture.keyring.currentKeyId(),
      generateDataKey: (context, options) => fixture.keyring.generateDataKey(context, options),
      reEncrypt: (wrapped, context, destination, options) =>
        fixture.keyring.reEncrypt(wrapped, context, destination, options),
      async decrypt(wrapped, context, options) {
        const unwrapped = await fixture.keyring.decrypt(wrapped, context, options);
        if (!paused) {
          paused = true;
          await gate.wait();
        }
        return unwrapped;
      },
    };
    const [secretId] = alice.secrets.keys();
    if (secretId === undefined) throw new Error("no secret");
    const racingPut = fixture.replica(pausing).put(
      alice.identity,
      parsePutSecret({
        secretId,
        provider: "binance",
        label: "",
        fields: { api_key: "written-during-rotation" },
      }),
      signal,
    );
    await gate.reached;

    await rotateUserDataKey({
      db: database.db,
      keyring: fixture.keyring,
      userRef: alice.identity.userRef,
      signal,
    });
    gate.open();
    const outcome = await racingPut.then(
      (metadata) => ({ stored: true, version: metadata.version }),
      (err: unknown) => ({ stored: false, code: err instanceof BrokerError ? err.code : "unknown" }),
    );

    // Either the put was retried under the new key, or refused as retryable; never stored
    // under a key nobody holds any more.
    if (outcome.stored) alice.secrets.set(secretId, "written-during-rotation");
    else expect(outcome).toEqual({ stored: false, code: "unavailable" });
    expect(await unreadableSecrets(fixture.replica(), [alice])).toEqual([]);
  });
});
