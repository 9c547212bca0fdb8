import { createHash, randomBytes, randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { createCallerKeyLookup, findCallerKeysByHashes } from "../../../src/store/caller-keys.repository.js";
import { createSecretForUseLookup, findSecretsForUse } from "../../../src/store/secrets.repository.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

const ALICE = randomBytes(32);
const BOB = randomBytes(32);

describeOnEachDatabase("batched hot-path lookups on %s", (kind) => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await database.close();
  });
  beforeEach(async () => {
    await database.truncate();
  });

  /** Stores a user with a (fake, opaque) wrapped key and one secret; returns the secret's id. */
  async function storeSecret(userRef: Buffer, label: string): Promise<string> {
    const id = randomUUID();
    await sql`insert into users (user_ref, wrapped_data_key, master_key_id) values (${userRef}, ${randomBytes(48)}, 'k')
              on conflict (user_ref) do nothing`.execute(database.db);
    await sql`insert into secrets (id, user_ref, provider, label, current_version, created_at, updated_at)
              values (${id}, ${userRef}, 'github', ${label}, 1, now(), now())`.execute(database.db);
    await sql`insert into secret_versions (secret_id, version, ciphertext, hint_ciphertext, fingerprint, field_names, created_at)
              values (${id}, 1, ${Buffer.from(`ct-${label}`)}, ${Buffer.from("hint")}, 'fp', ${["token"]}, now())`.execute(
      database.db,
    );
    return id;
  }

  async function storeCallerKey(name: string): Promise<Buffer> {
    const hash = createHash("sha256").update(name).digest();
    await sql`insert into caller_keys (id, name, key_hash, last4, scopes) values (${`ck_${name}`}, ${name}, ${hash}, 'abcd', ${["proxy:call"]})`.execute(
      database.db,
    );
    return hash;
  }

  it("find each stored caller key of a batch by its hash, and nothing for unknown hashes", async () => {
    const first = await storeCallerKey("first");
    const second = await storeCallerKey("second");
    const unknown = randomBytes(32);
    const found = await findCallerKeysByHashes(database.prepared, [first, unknown, second]);
    expect([...found.keys()].sort()).toEqual([first.toString("hex"), second.toString("hex")].sort());
    expect(found.get(first.toString("hex"))).toMatchObject({
      id: "ck_first",
      name: "first",
      scopes: ["proxy:call"],
    });
    expect(found.get(second.toString("hex"))?.keyHash.equals(second)).toBe(true);
  });

  it("answer concurrent caller-key lookups, known and unknown, each with its own record", async () => {
    const known = await storeCallerKey("known");
    const lookup = createCallerKeyLookup(database.prepared);
    const [a, b, c] = await Promise.all([
      lookup.findByHash(known),
      lookup.findByHash(randomBytes(32)),
      lookup.findByHash(known),
    ]);
    expect(a?.id).toBe("ck_known");
    expect(b).toBeUndefined();
    expect(c?.id).toBe("ck_known");
  });

  it("return a secret only for the user who owns it, even when another user's request shares the batch (I4)", async () => {
    const alices = await storeSecret(ALICE, "alice");
    const bobs = await storeSecret(BOB, "bob");
    const found = await findSecretsForUse(database.prepared, [
      { userRef: ALICE, secretId: alices },
      { userRef: ALICE, secretId: bobs },
      { userRef: BOB, secretId: bobs },
      { userRef: BOB, secretId: alices },
    ]);
    expect([...found.keys()].sort()).toEqual(
      [`${ALICE.toString("hex")}/${alices}`, `${BOB.toString("hex")}/${bobs}`].sort(),
    );
    expect(Buffer.from(found.get(`${BOB.toString("hex")}/${bobs}`)?.secret.ciphertext ?? []).toString()).toBe(
      "ct-bob",
    );
  });

  it("answer a malformed secret id as absent without failing the lookups that share its batch", async () => {
    const alices = await storeSecret(ALICE, "alice");
    const lookup = createSecretForUseLookup(database.prepared);
    const [good, malformed, crossUser] = await Promise.all([
      lookup.find(ALICE, alices),
      lookup.find(ALICE, "not-a-uuid"),
      lookup.find(BOB, alices),
    ]);
    expect(good?.secret.id).toBe(alices);
    expect(Buffer.from(good?.secret.ciphertext ?? []).toString()).toBe("ct-alice");
    expect(malformed).toBeUndefined();
    expect(crossUser).toBeUndefined();
  });
});
