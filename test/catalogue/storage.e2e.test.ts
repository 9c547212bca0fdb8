import { type ServiceError, status } from "@grpc/grpc-js";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { type GrpcCallOptions, unary, type WireMessage } from "../support/grpc-client.js";
import { createCanaryRegistry, describeLeaks, makeCanary, registerCanary } from "../support/leak-sweep.js";
import { dumpAllRows } from "../support/test-database.js";

/**
 * Catalogue D36, D43, D44 and D46 against the real broker: what a caller sees when stored
 * ciphertexts are tampered with, what a stolen database dump holds, and what crypto-shredding
 * leaves recoverable.
 */

const ALICE = "google-oauth2|storage-alice-canary-5150";
const BOB = "facebook|storage-bob-canary-6160";
const INTEGRITY_MESSAGE = "stored secret failed its integrity check";

function failure(promise: Promise<unknown>): Promise<ServiceError | undefined> {
  return promise.then(
    () => undefined,
    (err: ServiceError) => err,
  );
}

describe("stored ciphertexts, database dumps and crypto-shredding through the real broker", () => {
  let broker: BrokerHarness;
  let appKey: string;
  let adminKey: string;
  let alice: GrpcCallOptions;
  let bob: GrpcCallOptions;
  const canaries = createCanaryRegistry();

  beforeAll(async () => {
    broker = await startBroker("pglite");
    appKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    adminKey = (await broker.callerKey(["admin"])).key;
    alice = { callerKey: appKey, bearerToken: await broker.tokenFor(ALICE, { email: "same@example.com" }) };
    bob = { callerKey: appKey, bearerToken: await broker.tokenFor(BOB, { email: "same@example.com" }) };
    for (const [label, value] of [
      ["app caller key", appKey],
      ["admin caller key", adminKey],
      ["alice's sub", ALICE],
      ["bob's sub", BOB],
      ["alice's token", alice.bearerToken ?? ""],
      ["bob's token", bob.bearerToken ?? ""],
    ] as const) {
      canaries.register(label, value);
      registerCanary(label, value);
    }
  });

  afterAll(async () => {
    await broker?.close();
    expect(describeLeaks(canaries.scan("broker logs", broker.logs.text()))).toBe("");
  });

  async function putSecret(who: GrpcCallOptions, label: string, token: string): Promise<string> {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label, fields: { token } },
      who,
    );
    return (response.secret as WireMessage).id as string;
  }

  const callOk = (who: GrpcCallOptions, secretId: string) =>
    unary(broker.clients.proxy, "Call", { secretId, method: "GET", path: "/ok" }, who);

  const versionRow = (secretId: string) =>
    broker.database.db
      .selectFrom("secret_versions")
      .selectAll()
      .where("secret_id", "=", secretId)
      .executeTakeFirstOrThrow();

  async function metric(name: string): Promise<number> {
    const text = await (await fetch(`${broker.opsUrl}/metrics`)).text();
    const match = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
    if (match === null) throw new Error(`metric ${name} not exposed`);
    return Number(match[1]);
  }

  it("D36 answers DATA_LOSS with one generic message when A's ciphertext is copied into B's row or two rows are swapped, audits the failure and sends nothing upstream", async () => {
    const aliceToken = registerCanary("alice's upstream token", makeCanary("alicetoken"));
    const bobToken = registerCanary("bob's upstream token", makeCanary("bobtoken"));
    canaries.register("alice's upstream token", aliceToken);
    canaries.register("bob's upstream token", bobToken);
    const aliceId = await putSecret(alice, "d36 alice", aliceToken);
    const bobId = await putSecret(bob, "d36 bob", bobToken);
    const aliceSecond = await putSecret(alice, "d36 alice second", makeCanary("alicesecond"));
    await callOk(bob, bobId); // works before the tampering
    const aliceRow = await versionRow(aliceId);
    const secondRow = await versionRow(aliceSecond);

    // A's ciphertext (and hint) in B's row; then two of A's own rows swapped.
    const copy = (target: string, from: typeof aliceRow) =>
      broker.database.db
        .updateTable("secret_versions")
        .set({ ciphertext: from.ciphertext, hint_ciphertext: from.hint_ciphertext })
        .where("secret_id", "=", target)
        .execute();
    await copy(bobId, aliceRow);
    await copy(aliceId, secondRow);
    await copy(aliceSecond, aliceRow);
    broker.upstream.reset();

    const requestIds: string[] = [];
    for (const [who, id] of [
      [bob, bobId],
      [alice, aliceId],
      [alice, aliceSecond],
    ] as const) {
      const err = await failure(callOk(who, id));
      expect(err?.code).toBe(status.DATA_LOSS);
      // Generic: which check failed, whose data it was, or any byte of it is not said.
      expect(err?.details).toBe(INTEGRITY_MESSAGE);
      requestIds.push(String(err?.metadata.get("x-request-id")[0]));
    }
    expect(broker.upstream.requests).toHaveLength(0);

    // Outcome rows of sensitive calls are committed after the call answers.
    await broker.app.flushAudit();
    const rows = await broker.database.db
      .selectFrom("audit_events")
      .select(["request_id", "action", "outcome", "code", "target"])
      .where("request_id", "in", requestIds)
      .where("outcome", "!=", "started")
      .execute();
    expect(rows.map((r) => [r.action, r.outcome, r.code]).sort()).toEqual([
      ["proxy.call", "error", "data_loss"],
      ["proxy.call", "error", "data_loss"],
      ["proxy.call", "error", "data_loss"],
    ]);
    // And operators are told at error level, with the request id, not at the caller-mistake level.
    const errorLines = broker.logs.lines
      .map((line) => JSON.parse(line) as { level?: string; requestId?: string; brokerCode?: string })
      .filter((l) => l.level === "error" && l.brokerCode === "data_loss");
    expect(errorLines.map((l) => l.requestId).sort()).toEqual([...requestIds].sort());
  });

  it("W7 D36 answers DATA_LOSS when a row's binding columns are rewritten (provider, version, owner) and sends nothing upstream", async () => {
    const byProvider = await putSecret(alice, "w7 provider", makeCanary("w7provider"));
    const byVersion = await putSecret(alice, "w7 version", makeCanary("w7version1"));
    await unary(
      broker.clients.secrets,
      "PutSecret",
      {
        secretId: byVersion,
        provider: "test-upstream",
        label: "w7 version",
        fields: { token: makeCanary("w7version2") },
      },
      alice,
    );
    const byOwner = await putSecret(alice, "w7 owner", makeCanary("w7owner"));
    const bobs = await putSecret(bob, "w7 bob", makeCanary("w7bob"));
    for (const id of [byProvider, byVersion, byOwner]) await callOk(alice, id);

    const db = broker.database.db;
    // The provider column names another provider, one whose operation classes also admit this GET
    // (so the call passes the policy and reaches the seal, which must catch the rewrite).
    await db.updateTable("secrets").set({ provider: "test-graph" }).where("id", "=", byProvider).execute();
    // Version 1's ciphertext under version 2's number (an old value replayed as current).
    const v1 = await db
      .selectFrom("secret_versions")
      .selectAll()
      .where("secret_id", "=", byVersion)
      .where("version", "=", 1)
      .executeTakeFirstOrThrow();
    await db
      .updateTable("secret_versions")
      .set({ ciphertext: v1.ciphertext, hint_ciphertext: v1.hint_ciphertext })
      .where("secret_id", "=", byVersion)
      .where("version", "=", 2)
      .execute();
    // Alice's row handed to Bob (his user ref in its owner column).
    const bobRow = await db
      .selectFrom("secrets")
      .select("user_ref")
      .where("id", "=", bobs)
      .executeTakeFirstOrThrow();
    await db.updateTable("secrets").set({ user_ref: bobRow.user_ref }).where("id", "=", byOwner).execute();
    broker.upstream.reset();

    for (const [who, id] of [
      [alice, byProvider],
      [alice, byVersion],
      [bob, byOwner],
    ] as const) {
      const err = await failure(callOk(who, id));
      expect([id, err?.code, err?.details]).toEqual([id, status.DATA_LOSS, INTEGRITY_MESSAGE]);
    }
    // And the row is no longer Alice's to use at all.
    expect((await failure(callOk(alice, byOwner)))?.code).toBe(status.NOT_FOUND);
    expect(broker.upstream.requests).toHaveLength(0);
  });

  it("L1 answers DATA_LOSS when a secret's current version is rolled back in the database, sends nothing upstream, and a legitimate new version keeps working", async () => {
    const first = makeCanary("l1versionone");
    const second = makeCanary("l1versiontwo");
    const third = makeCanary("l1versionthree");
    const id = await putSecret(alice, "l1 rollback", first);
    const putVersion = (token: string) =>
      unary(
        broker.clients.secrets,
        "PutSecret",
        { secretId: id, provider: "test-upstream", label: "l1 rollback", fields: { token } },
        alice,
      );
    await putVersion(second);
    broker.upstream.reset();
    await callOk(alice, id);
    expect(JSON.stringify(broker.upstream.requests)).toContain(second);

    const db = broker.database.db;
    await db.updateTable("secrets").set({ current_version: 1 }).where("id", "=", id).execute();
    broker.upstream.reset();
    const err = await failure(callOk(alice, id));
    expect([err?.code, err?.details]).toEqual([status.DATA_LOSS, INTEGRITY_MESSAGE]);
    expect(broker.upstream.requests).toHaveLength(0);
    await broker.app.flushAudit();
    const requestId = String(err?.metadata.get("x-request-id")[0]);
    const outcome = await db
      .selectFrom("audit_events")
      .select(["action", "outcome", "code"])
      .where("request_id", "=", requestId)
      .where("outcome", "!=", "started")
      .execute();
    expect(outcome).toEqual([{ action: "proxy.call", outcome: "error", code: "data_loss" }]);

    // The pointer the broker set is restored; a new version then moves it on as usual.
    await db.updateTable("secrets").set({ current_version: 2 }).where("id", "=", id).execute();
    await putVersion(third);
    broker.upstream.reset();
    await callOk(alice, id);
    expect(JSON.stringify(broker.upstream.requests)).toContain(third);
  });

  it("D43 leaves no secret, caller key, token or raw user id in a dump of every table, and no dumped value works as a caller key", async () => {
    const secretValue = makeCanary("dumpsecret");
    canaries.register("a stored secret", secretValue);
    await putSecret(alice, "d43", secretValue);
    const extraKeys = await Promise.all(
      [["secrets:read"], ["proxy:call"], ["admin"]].map(async (scopes) => {
        const { key } = await broker.callerKey(scopes as Parameters<BrokerHarness["callerKey"]>[0]);
        return canaries.register(`caller key ${scopes.join(",")}`, key);
      }),
    );
    const dump = await dumpAllRows(broker.database.db);
    expect(dump.length).toBeGreaterThan(1_000);
    expect(describeLeaks(canaries.scan("database dump", dump))).toBe("");
    expect(dump).not.toContain("same@example.com");

    // What the dump does hold for caller keys (hashes, last four) opens nothing.
    const stored = await broker.database.db.selectFrom("caller_keys").select(["key_hash", "last4"]).execute();
    expect(stored.length).toBeGreaterThanOrEqual(2 + extraKeys.length);
    for (const row of stored) {
      const hash = Buffer.from(row.key_hash);
      for (const candidate of [hash.toString("hex"), hash.toString("base64"), `kbk_${row.last4}`]) {
        const err = await failure(
          unary(broker.clients.secrets, "ListSecrets", {}, { ...alice, callerKey: candidate }),
        );
        expect(err?.code).toBe(status.UNAUTHENTICATED);
      }
    }
  });

  it("D44 leaves a shredded user's old ciphertexts unopenable, even restored from a backup into the user's new account", async () => {
    const oldToken = makeCanary("shredded");
    canaries.register("a shredded secret", oldToken);
    const oldId = await putSecret(alice, "d44 before shred", oldToken);
    await callOk(alice, oldId);
    // The "backup": every row of the secret, taken before the shred.
    const backup = {
      secret: await broker.database.db
        .selectFrom("secrets")
        .selectAll()
        .where("id", "=", oldId)
        .executeTakeFirstOrThrow(),
      versions: await broker.database.db
        .selectFrom("secret_versions")
        .selectAll()
        .where("secret_id", "=", oldId)
        .execute(),
    };

    const shred = await unary(broker.clients.admin, "ShredUser", { subject: ALICE }, { callerKey: adminKey });
    expect(Number(shred.response.secretsDestroyed)).toBeGreaterThanOrEqual(1);
    expect((await failure(callOk(alice, oldId)))?.code).toBe(status.NOT_FOUND);

    // The user comes back (a new data key) and the old rows are restored under the same user ref.
    const newId = await putSecret(alice, "d44 after shred", makeCanary("reborn"));
    await broker.database.db.insertInto("secrets").values(backup.secret).execute();
    await broker.database.db.insertInto("secret_versions").values(backup.versions).execute();
    broker.upstream.reset();

    const err = await failure(callOk(alice, oldId));
    expect(err?.code).toBe(status.DATA_LOSS);
    expect(broker.upstream.requests).toHaveLength(0);
    await callOk(alice, newId);
    expect(broker.upstream.requests).toHaveLength(1);
    await sql`delete from secrets where id = ${oldId}`.execute(broker.database.db);
  });

  it("D46 drops a shredded user's data key from the in-memory cache at once", async () => {
    const carol = {
      callerKey: appKey,
      bearerToken: registerCanary("carol's token", await broker.tokenFor("auth0|storage-carol-canary")),
    };
    const id = await putSecret(carol, "d46", makeCanary("carol"));
    await callOk(carol, id);
    const before = await metric("keybroker_data_key_cache_entries");
    expect(before).toBeGreaterThanOrEqual(1);
    await unary(
      broker.clients.admin,
      "ShredUser",
      { subject: "auth0|storage-carol-canary" },
      { callerKey: adminKey },
    );
    expect(await metric("keybroker_data_key_cache_entries")).toBe(before - 1);
  });
});
