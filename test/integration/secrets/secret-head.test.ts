import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { UserIdentity } from "../../../src/auth/identity.js";
import { open, type SecretBinding, seal } from "../../../src/crypto/envelope.js";
import { headMac } from "../../../src/crypto/secret-head.js";
import { userKeyContext } from "../../../src/keys/user-data-keys.js";
import { parsePutSecret } from "../../../src/secrets/secret-input.js";
import type { ProviderCatalog } from "../../../src/secrets/secret-service.js";
import { asBuffer } from "../../../src/store/bytes.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { createSecretsFixture, type SecretsFixture } from "../../support/secrets-fixture.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

/** The first page at the default size: every secret these tests store. */
const ALL = { provider: undefined, pageSize: 0, pageToken: "" };

/**
 * Catalogue L1: a database writer must not be able to roll a secret back to an older version
 * (each older ciphertext is still validly sealed for its own version number).
 */

const signal = new AbortController().signal;
const INTEGRITY_MESSAGE = "stored secret failed its integrity check";
const KEY_V1 = "L1keyVersionOne0123456789abcdefghij";
const KEY_V2 = "L1keyVersionTwo0123456789abcdefghij";
const KEY_V3 = "L1keyVersionThree123456789abcdefghi";

describeOnEachDatabase("secret heads (catalogue L1) on %s", (kind) => {
  let database: TestDatabase;
  let fixture: SecretsFixture;
  let alice: UserIdentity;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    fixture = await createSecretsFixture(database);
    alice = { userRef: fixture.userRefOf("google-oauth2|l1-alice"), expiresAt: Date.now() / 1000 + 3600 };
  });

  afterAll(async () => {
    await fixture.close();
    await database.close();
  });

  beforeEach(async () => {
    await sql`truncate table secret_versions, secrets, users cascade`.execute(database.db);
  });

  const put = (apiKey: string, secretId = "") =>
    fixture.secrets.put(
      alice,
      parsePutSecret({ secretId, provider: "binance", label: "main", fields: { api_key: apiKey } }),
      signal,
    );

  const openedKey = async (secretId: string) => {
    const opened = await fixture.newReplica().open(alice, secretId, signal);
    const value = opened.fields.get("api_key")?.toString("utf8");
    for (const field of opened.fields.values()) field.fill(0);
    return value;
  };

  const setPointer = (
    secretId: string,
    change: { current_version?: number; head_mac?: Uint8Array | null; operation_grant?: string[] | null },
  ) => database.db.updateTable("secrets").set(change).where("id", "=", secretId).execute();

  const headOf = async (secretId: string) =>
    (
      await database.db
        .selectFrom("secrets")
        .select("head_mac")
        .where("id", "=", secretId)
        .executeTakeFirstOrThrow()
    ).head_mac;

  async function dataKey(): Promise<Buffer> {
    const row = await database.db
      .selectFrom("users")
      .select(["wrapped_data_key", "master_key_id"])
      .where("user_ref", "=", alice.userRef)
      .executeTakeFirstOrThrow();
    const wrapped = { wrapped: asBuffer(row.wrapped_data_key), keyId: row.master_key_id };
    return (await fixture.keyring.decrypt(wrapped, userKeyContext(alice.userRef))).plaintext;
  }

  /** Rewrites a secret as a broker before L1 stored it: unbound envelopes and no head. */
  async function makeLegacy(secretId: string): Promise<void> {
    const key = await dataKey();
    const versions = await database.db
      .selectFrom("secret_versions")
      .selectAll()
      .where("secret_id", "=", secretId)
      .execute();
    for (const v of versions) {
      const binding = (part: SecretBinding["part"], headBound: boolean): SecretBinding => ({
        secretId,
        userRef: alice.userRef,
        provider: "binance",
        version: v.version,
        part,
        headBound,
      });
      const unbind = (sealed: Uint8Array, part: SecretBinding["part"]) =>
        seal(key, open(key, sealed, binding(part, true)), binding(part, false));
      await database.db
        .updateTable("secret_versions")
        .set({
          ciphertext: unbind(v.ciphertext, "fields"),
          hint_ciphertext: unbind(v.hint_ciphertext, "hint"),
        })
        .where("secret_id", "=", secretId)
        .where("version", "=", v.version)
        .execute();
    }
    // Written before heads, so before grants too (issue 13): neither column is set.
    await setPointer(secretId, { head_mac: null, operation_grant: null });
    key.fill(0);
  }

  async function expectIntegrityFailure(promise: Promise<unknown>): Promise<void> {
    const err = await brokerErrorOf(promise);
    expect([err.code, err.message]).toEqual(["data_loss", INTEGRITY_MESSAGE]);
  }

  it("L1 answers data_loss when the current version pointer is rolled back, on open, list and a new version", async () => {
    const { id } = await put(KEY_V1);
    await put(KEY_V2, id);
    expect(await openedKey(id)).toBe(KEY_V2);

    await setPointer(id, { current_version: 1 });

    await expectIntegrityFailure(fixture.newReplica().open(alice, id, signal));
    await expectIntegrityFailure(fixture.newReplica().list(alice, ALL, signal));
    // A new version is not built on a rolled-back pointer either (nor is the rollback re-signed).
    await expectIntegrityFailure(put(KEY_V3, id));
    expect(
      (await database.db.selectFrom("secrets").select("current_version").where("id", "=", id).execute())[0],
    ).toEqual({ current_version: 1 });
  });

  it("L1 answers data_loss when the head is cleared or taken from another secret along with the rollback", async () => {
    const { id } = await put(KEY_V1);
    await put(KEY_V2, id);
    const other = await fixture.secrets.put(
      alice,
      parsePutSecret({ secretId: "", provider: "binance", label: "other", fields: { api_key: KEY_V3 } }),
      signal,
    );

    // Cleared: the bound versions no longer open as pre-L1 ones, at either version.
    await setPointer(id, { current_version: 1, head_mac: null });
    await expectIntegrityFailure(fixture.newReplica().open(alice, id, signal));
    await setPointer(id, { current_version: 2, head_mac: null });
    await expectIntegrityFailure(fixture.newReplica().open(alice, id, signal));

    // Another secret's head, made for version 1: it names another secret id.
    await setPointer(id, { current_version: 1, head_mac: await headOf(other.id) });
    await expectIntegrityFailure(fixture.newReplica().open(alice, id, signal));
  });

  it("L1 keeps reading a secret stored before heads, and binds it and its kept version on its next write", async () => {
    const { id } = await put(KEY_V1);
    await makeLegacy(id);
    expect(await headOf(id)).toBeNull();
    expect(await openedKey(id)).toBe(KEY_V1);
    expect((await fixture.newReplica().list(alice, ALL, signal)).secrets.map((s) => s.version)).toEqual([1]);

    await put(KEY_V2, id);
    expect(await headOf(id)).not.toBeNull();
    expect(await openedKey(id)).toBe(KEY_V2);

    // Bound now: a rollback, with the head kept or cleared, is detected.
    await setPointer(id, { current_version: 1 });
    await expectIntegrityFailure(fixture.newReplica().open(alice, id, signal));
    await setPointer(id, { current_version: 1, head_mac: null });
    await expectIntegrityFailure(fixture.newReplica().open(alice, id, signal));
  });

  it("L1 counts the re-sealed kept versions against the data key's encryption budget", async () => {
    const { id } = await put(KEY_V1);
    await makeLegacy(id);
    const before = await database.db.selectFrom("users").select("encryptions").executeTakeFirstOrThrow();
    await put(KEY_V2, id);
    const after = await database.db.selectFrom("users").select("encryptions").executeTakeFirstOrThrow();
    // Two for the new version, two for version 1 re-sealed as bound.
    expect(after.encryptions - before.encryptions).toBe(4);
  });

  describe("grants (SPEC I10)", () => {
    // As the registry would answer for Binance.
    const catalog: ProviderCatalog = {
      requiredFields: () => ["api_key"],
      defaultGrant: () => ["trade", "read", "write"],
    };

    it("H94 keeps a secret stored before grants on its v1 head with its provider's default grant, until a put binds one", async () => {
      const { id } = await put(KEY_V1);
      // What a row written between migrations 0004 and 0007 looks like: a v1 head, no grant.
      const key = await dataKey();
      const v1 = headMac(key, { secretId: id, userRef: alice.userRef, provider: "binance", version: 1 });
      key.fill(0);
      await setPointer(id, { head_mac: v1, operation_grant: null });

      const replica = fixture.newReplica(catalog);
      expect(await openedKey(id)).toBe(KEY_V1);
      expect((await replica.list(alice, ALL, signal)).secrets.map((s) => s.grant)).toEqual([
        ["read", "trade", "write"],
      ]);

      const stored = await replica.put(
        alice,
        parsePutSecret({
          secretId: id,
          provider: "binance",
          label: "",
          fields: { api_key: KEY_V2 },
          grant: ["read"],
        }),
        signal,
      );
      expect(stored).toMatchObject({ grant: ["read"], grantChange: "narrowed" });
      expect(await openedKey(id)).toBe(KEY_V2);
      // Bound now: clearing the grant no longer falls back to the default.
      await setPointer(id, { operation_grant: null });
      await expectIntegrityFailure(fixture.newReplica().open(alice, id, signal));
    });

    it("H94 refuses a grant written into a secret that has no head", async () => {
      const { id } = await put(KEY_V1);
      await makeLegacy(id);
      await setPointer(id, { operation_grant: ["read", "transfer"] });

      await expectIntegrityFailure(fixture.newReplica().open(alice, id, signal));
      await expectIntegrityFailure(put(KEY_V2, id));
    });
  });
});
