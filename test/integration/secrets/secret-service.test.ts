import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import type { UserIdentity } from "../../../src/auth/identity.js";
import { parsePutSecret } from "../../../src/secrets/secret-input.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { createSecretsFixture, type SecretsFixture } from "../../support/secrets-fixture.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  dumpAllRows,
  type TestDatabase,
} from "../../support/test-database.js";

/** The first page at the default size: every secret these tests store. */
const ALL = { provider: undefined, pageSize: 0, pageToken: "" };

const CANARY_KEY = "CANARYkey0123456789abcdefghijklmnop";
const CANARY_SECRET = "CANARYsecret9876543210zyxwvutsrqpo";
const ALICE_SUB = "google-oauth2|alice-canary-sub-1234";
const BOB_SUB = "facebook|bob-canary-sub-5678";
const signal = new AbortController().signal;

describeOnEachDatabase("secret service on %s", (kind) => {
  let database: TestDatabase;
  let fixture: SecretsFixture;
  let alice: UserIdentity;
  let bob: UserIdentity;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    fixture = await createSecretsFixture(database);
    const expiresAt = Math.floor(Date.now() / 1000) + 3600;
    alice = { userRef: fixture.userRefOf(ALICE_SUB), expiresAt };
    bob = { userRef: fixture.userRefOf(BOB_SUB), expiresAt };
  });

  afterAll(async () => {
    await fixture.close();
    await database.close();
  });

  beforeEach(async () => {
    // Keep the pepper (broker_state); clear user data.
    await sql`truncate table secret_versions, secrets, users cascade`.execute(database.db);
  });

  const put = (
    user: UserIdentity,
    fields: Record<string, string>,
    extra: Partial<{ secretId: string; label: string }> = {},
  ) =>
    fixture.secrets.put(
      user,
      parsePutSecret({
        secretId: extra.secretId ?? "",
        provider: "binance",
        label: extra.label ?? "main",
        fields,
      }),
      signal,
    );

  it("stores a secret and lists only its metadata, with a masked hint and a fingerprint", async () => {
    const created = await put(alice, { api_key: CANARY_KEY, api_secret: CANARY_SECRET });
    const { secrets: list } = await fixture.secrets.list(alice, ALL, signal);
    expect(list).toHaveLength(1);
    expect(list[0]).toMatchObject({
      id: created.id,
      provider: "binance",
      label: "main",
      version: 1,
      fieldNames: ["api_key", "api_secret"],
      hint: `…${CANARY_KEY.slice(-4)}`,
    });
    expect(list[0]?.fingerprint).toMatch(/^fp_[0-9a-f]{24}$/);
    expect(JSON.stringify(list)).not.toContain(CANARY_SECRET);
    expect(JSON.stringify(list)).not.toContain(CANARY_KEY.slice(0, -4));
  });

  it("adds a new version to an existing secret and keeps the id", async () => {
    const v1 = await put(alice, { api_key: CANARY_KEY, api_secret: CANARY_SECRET });
    const v2 = await put(
      alice,
      { api_key: `${CANARY_KEY}2`, api_secret: CANARY_SECRET },
      { secretId: v1.id, label: "" },
    );
    expect(v2.id).toBe(v1.id);
    expect(v2.version).toBe(2);
    expect(v2.label).toBe("main");
    expect(v2.fingerprint).not.toBe(v1.fingerprint);
    const opened = await fixture.secrets.open(alice, v1.id, signal);
    expect(opened.fields.get("api_key")?.toString()).toBe(`${CANARY_KEY}2`);
  });

  it("keeps only the current and the previous version", async () => {
    const v1 = await put(alice, { api_key: CANARY_KEY });
    for (let i = 2; i <= 4; i++) await put(alice, { api_key: `${CANARY_KEY}${i}` }, { secretId: v1.id });
    const versions = await database.db
      .selectFrom("secret_versions")
      .select("version")
      .where("secret_id", "=", v1.id)
      .orderBy("version")
      .execute();
    expect(versions.map((v) => v.version)).toEqual([3, 4]);
  });

  it("refuses a second secret with the same provider and label as ALREADY_EXISTS", async () => {
    await put(alice, { api_key: CANARY_KEY });
    const err = await brokerErrorOf(put(alice, { api_key: CANARY_KEY }));
    expect(err.code).toBe("already_exists");
  });

  it("I4 answers NOT_FOUND for another user's secret on open, new version and delete, and leaves it intact", async () => {
    const mine = await put(alice, { api_key: CANARY_KEY });
    expect((await brokerErrorOf(fixture.secrets.open(bob, mine.id, signal))).code).toBe("not_found");
    expect((await brokerErrorOf(put(bob, { api_key: "x".repeat(20) }, { secretId: mine.id }))).code).toBe(
      "not_found",
    );
    expect((await brokerErrorOf(fixture.secrets.delete(bob, mine.id))).code).toBe("not_found");
    expect((await fixture.secrets.list(bob, ALL, signal)).secrets).toEqual([]);
    const unknown = await brokerErrorOf(
      fixture.secrets.delete(alice, "00000000-0000-4000-8000-000000000000"),
    );
    expect(unknown.code).toBe("not_found");
    expect(unknown.message).toBe((await brokerErrorOf(fixture.secrets.delete(bob, mine.id))).message);
    expect((await fixture.secrets.open(alice, mine.id, signal)).fields.get("api_key")?.toString()).toBe(
      CANARY_KEY,
    );
  });

  it("deletes a secret with all its versions", async () => {
    const mine = await put(alice, { api_key: CANARY_KEY });
    await put(alice, { api_key: `${CANARY_KEY}2` }, { secretId: mine.id });
    await fixture.secrets.delete(alice, mine.id);
    expect((await fixture.secrets.list(alice, ALL, signal)).secrets).toEqual([]);
    const left = await database.db.selectFrom("secret_versions").selectAll().execute();
    expect(left).toHaveLength(0);
  });

  it("I5 leaves neither the secret nor the raw user id in a dump of the database", async () => {
    await put(alice, { api_key: CANARY_KEY, api_secret: CANARY_SECRET });
    const dump = await dumpAllRows(database.db);
    for (const needle of [CANARY_KEY, CANARY_SECRET, ALICE_SUB, "alice-canary"]) {
      expect(dump).not.toContain(needle);
      expect(dump).not.toContain(Buffer.from(needle).toString("hex"));
      expect(dump).not.toContain(Buffer.from(needle).toString("base64"));
    }
  });

  it("I6 fails closed with DATA_LOSS when one ciphertext byte is flipped", async () => {
    const mine = await put(alice, { api_key: CANARY_KEY });
    const row = await database.db
      .selectFrom("secret_versions")
      .select("ciphertext")
      .where("secret_id", "=", mine.id)
      .executeTakeFirstOrThrow();
    const tampered = Buffer.from(row.ciphertext);
    tampered[tampered.length - 20] = (tampered[tampered.length - 20] ?? 0) ^ 0x01;
    await database.db
      .updateTable("secret_versions")
      .set({ ciphertext: tampered })
      .where("secret_id", "=", mine.id)
      .execute();
    const err = await brokerErrorOf(fixture.secrets.open(alice, mine.id, signal));
    expect(err.code).toBe("data_loss");
    expect(err.message).not.toContain(CANARY_KEY);
  });

  it("I6 detects two rows' ciphertexts swapped, even within one user", async () => {
    const a = await put(alice, { api_key: CANARY_KEY }, { label: "a" });
    const b = await put(alice, { api_key: CANARY_SECRET }, { label: "b" });
    const rows = await database.db
      .selectFrom("secret_versions")
      .select(["secret_id", "ciphertext"])
      .execute();
    const ctOf = (id: string) => rows.find((r) => r.secret_id === id)?.ciphertext ?? new Uint8Array();
    await database.db
      .updateTable("secret_versions")
      .set({ ciphertext: ctOf(b.id) })
      .where("secret_id", "=", a.id)
      .execute();
    await database.db
      .updateTable("secret_versions")
      .set({ ciphertext: ctOf(a.id) })
      .where("secret_id", "=", b.id)
      .execute();
    expect((await brokerErrorOf(fixture.secrets.open(alice, a.id, signal))).code).toBe("data_loss");
    expect((await brokerErrorOf(fixture.secrets.open(alice, b.id, signal))).code).toBe("data_loss");
  });

  it("D37 refuses A's wrapped data key moved under B's row (KMS encryption context)", async () => {
    await put(alice, { api_key: CANARY_KEY });
    const bobSecret = await put(bob, { api_key: CANARY_SECRET });
    const aliceKey = await database.db
      .selectFrom("users")
      .select("wrapped_data_key")
      .where("user_ref", "=", alice.userRef)
      .executeTakeFirstOrThrow();
    await database.db
      .updateTable("users")
      .set({ wrapped_data_key: aliceKey.wrapped_data_key, data_key_version: 7 })
      .where("user_ref", "=", bob.userRef)
      .execute();
    const err = await brokerErrorOf(fixture.secrets.open(bob, bobSecret.id, signal));
    expect(err.code).toBe("data_loss");
  });

  it("costs one KMS Decrypt for 1,000 reads of one user's secrets (data-key cache)", async () => {
    const mine = await put(alice, { api_key: CANARY_KEY, api_secret: CANARY_SECRET });
    fixture.kms.resetCounts();
    for (let i = 0; i < 1000; i++) {
      const opened = await fixture.secrets.open(alice, mine.id, signal);
      for (const value of opened.fields.values()) value.fill(0);
    }
    // The key generated at the user's first write seeds the cache, so no Decrypt is needed at all.
    expect(fixture.kms.callCount("Decrypt")).toBeLessThanOrEqual(1);
    expect(fixture.kms.callCount()).toBeLessThanOrEqual(1);
  });

  it("costs exactly one KMS Decrypt for 1,000 list calls on a replica with a cold cache", async () => {
    await put(alice, { api_key: CANARY_KEY });
    const replica = fixture.newReplica();
    fixture.kms.resetCounts();
    for (let i = 0; i < 1000; i++) {
      const { secrets: list } = await replica.list(alice, ALL, signal);
      expect(list[0]?.hint).toBe(`…${CANARY_KEY.slice(-4)}`);
    }
    expect(fixture.kms.callCount("Decrypt")).toBe(1);
    expect(fixture.kms.callCount()).toBe(1);
  });
});
