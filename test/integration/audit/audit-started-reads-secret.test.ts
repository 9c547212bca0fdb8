import { randomBytes, randomUUID } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { createCallerKeyAdmin } from "../../../src/admin/caller-key-admin.js";
import { verifyAuditChain } from "../../../src/audit/audit-chain.js";
import type { AuditEvent } from "../../../src/audit/audit-event.js";
import { type AuditLog, createAuditLog } from "../../../src/audit/audit-log.js";
import { revokeCallerKey } from "../../../src/store/caller-keys.repository.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { countingRunner } from "../../support/counting-runner.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

const ALICE = randomBytes(32);
const BOB = randomBytes(32);

/**
 * Issue 17 item 2: a proxied call's one round trip is the statement that commits its `started`
 * row; the same statement checks its caller key (L260–L263) and reads the sealed secret it uses.
 */
describeOnEachDatabase("a started row reads its call's sealed secret on %s", (kind) => {
  let database: TestDatabase;
  let log: AuditLog;
  let prepared: ReturnType<typeof countingRunner>;
  let callerKeyId: string;

  const started = (overrides: Partial<AuditEvent> = {}): AuditEvent => ({
    requestId: `req-${randomBytes(6).toString("hex")}`,
    action: "proxy.call",
    outcome: "started",
    callerKeyId,
    ...overrides,
  });
  const live = { requireLiveCallerKey: true } as const;

  /** A user with an opaque wrapped key and one secret (ciphertexts are opaque to the store). */
  async function storeSecret(userRef: Buffer, ciphertext: string): Promise<string> {
    const id = randomUUID();
    await sql`insert into users (user_ref, wrapped_data_key, master_key_id) values (${userRef}, ${randomBytes(48)}, 'k')
              on conflict (user_ref) do nothing`.execute(database.db);
    await sql`insert into secrets (id, user_ref, provider, label, current_version, created_at, updated_at)
              values (${id}, ${userRef}, 'github', 'l', 1, now(), now())`.execute(database.db);
    await sql`insert into secret_versions (secret_id, version, ciphertext, hint_ciphertext, fingerprint, field_names, created_at)
              values (${id}, 1, ${Buffer.from(ciphertext)}, ${Buffer.from("hint")}, 'fp', ${["token"]}, now())`.execute(
      database.db,
    );
    return id;
  }
  const text = (bytes: Uint8Array | undefined) =>
    bytes === undefined ? undefined : Buffer.from(bytes).toString();
  const auditRows = async () =>
    Number(
      (await sql<{ n: number }>`select count(*)::int as n from audit_events`.execute(database.db)).rows[0]?.n,
    );

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await database.close();
  });
  beforeEach(async () => {
    await database.truncate();
    prepared = countingRunner(database.prepared);
    log = createAuditLog({ prepared });
    callerKeyId = (
      await createCallerKeyAdmin({ db: database.db }).create({
        name: "app",
        scopes: ["proxy:call"],
        expiresAt: null,
      })
    ).summary.id;
    // The first append of a process locks the head; the calls below find it where they left it.
    await log.record(started({ outcome: "ok" }));
  });

  it("L285 one statement commits a batch's started rows and reads each call's own secret; another user's id reads nothing (I4)", async () => {
    const alices = await storeSecret(ALICE, "alice-ciphertext");
    const before = prepared.count;
    const [mine, bobAsksForAlices, notAnId, plain] = await Promise.all([
      log.recordReading(started(), { userRef: ALICE, secretId: alices }, live),
      log.recordReading(started(), { userRef: BOB, secretId: alices }, live),
      // Not a uuid names no secret: nothing is read for it, and it fails no other call of the batch.
      log.recordReading(started(), { userRef: ALICE, secretId: "../etc/passwd" }, live),
      log.record(started({ outcome: "ok" })),
    ]);
    expect(prepared.count - before).toBe(1);
    expect(mine?.secret.id).toBe(alices);
    expect(text(mine?.secret.ciphertext)).toBe("alice-ciphertext");
    expect(mine?.secret.provider).toBe("github");
    expect(Buffer.from(mine?.userKey.wrappedDataKey ?? []).length).toBe(48);
    expect(bobAsksForAlices).toBeUndefined();
    expect(notAnId).toBeUndefined();
    expect(plain).toBeUndefined();
    // Every started row was written all the same: the refusals (NOT_FOUND) come after them.
    expect(await auditRows()).toBe(5);
    expect((await verifyAuditChain(database.db)).ok).toBe(true);
  });

  it("L286 a dead caller key's call reads nothing; a change or a delete through another connection shows in the next call's read", async () => {
    const id = await storeSecret(ALICE, "v1");
    const dead = (
      await createCallerKeyAdmin({ db: database.db }).create({
        name: "old",
        scopes: ["proxy:call"],
        expiresAt: null,
      })
    ).summary.id;
    await revokeCallerKey(database.db, dead, new Date());
    const [refused, served] = await Promise.allSettled([
      log.recordReading(started({ callerKeyId: dead }), { userRef: ALICE, secretId: id }, live),
      log.recordReading(started(), { userRef: ALICE, secretId: id }, live),
    ]);
    expect(refused.status).toBe("rejected");
    expect(
      await brokerErrorOf(refused.status === "rejected" ? Promise.reject(refused.reason) : Promise.resolve()),
    ).toMatchObject({
      code: "unauthenticated",
    });
    expect(served.status === "fulfilled" ? text(served.value?.secret.ciphertext) : "rejected").toBe("v1");

    // A new version, as PutSecret on another replica would commit it: no cached row is served.
    await sql`insert into secret_versions (secret_id, version, ciphertext, hint_ciphertext, fingerprint, field_names, created_at)
              values (${id}, 2, ${Buffer.from("v2")}, ${Buffer.from("hint")}, 'fp', ${["token"]}, now())`.execute(
      database.db,
    );
    await sql`update secrets set current_version = 2 where id = ${id}`.execute(database.db);
    const changed = await log.recordReading(started(), { userRef: ALICE, secretId: id }, live);
    expect(changed?.secret.version).toBe(2);
    expect(text(changed?.secret.ciphertext)).toBe("v2");

    await sql`delete from secrets where id = ${id}`.execute(database.db);
    expect(await log.recordReading(started(), { userRef: ALICE, secretId: id }, live)).toBeUndefined();
  });
});
