import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { createCallerKeyAdmin } from "../../../src/admin/caller-key-admin.js";
import { verifyAuditChain } from "../../../src/audit/audit-chain.js";
import type { AuditEvent } from "../../../src/audit/audit-event.js";
import { type AuditLog, createAuditLog } from "../../../src/audit/audit-log.js";
import { createCallerAuthenticator } from "../../../src/auth/caller-authenticator.js";
import {
  createCallerKeyLookup,
  expireCallerKeyBy,
  revokeCallerKey,
  suspendCallerKey,
} from "../../../src/store/caller-keys.repository.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { countingRunner as counting } from "../../support/counting-runner.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

describeOnEachDatabase("a started row checks its caller key on %s", (kind) => {
  let database: TestDatabase;
  let log: AuditLog;
  let prepared: ReturnType<typeof counting>;

  const started = (callerKeyId: string, overrides: Partial<AuditEvent> = {}): AuditEvent => ({
    requestId: `req-${randomBytes(6).toString("hex")}`,
    action: "proxy.call",
    outcome: "started",
    callerKeyId,
    ...overrides,
  });
  const rowsFor = async (callerKeyId: string) =>
    Number(
      (
        await sql<{
          n: number;
        }>`select count(*)::int as n from audit_events where caller_key_id = ${callerKeyId}`.execute(
          database.db,
        )
      ).rows[0]?.n,
    );
  const newKey = async (expiresAt: Date | null = null) =>
    createCallerKeyAdmin({ db: database.db }).create({ name: "app", scopes: ["proxy:call"], expiresAt });

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await database.close();
  });
  beforeEach(async () => {
    await database.truncate();
    prepared = counting(database.prepared);
    log = createAuditLog({ prepared });
  });

  it("L260 commits the started row of a live key, and refuses UNAUTHENTICATED, writing nothing, once it is revoked elsewhere", async () => {
    const { id } = (await newKey()).summary;
    await log.record(started(id), { requireLiveCallerKey: true });
    // Revoked through another connection, as an operator on another replica would.
    await revokeCallerKey(database.db, id, new Date());
    const err = await brokerErrorOf(log.record(started(id), { requireLiveCallerKey: true }));
    expect(err.code).toBe("unauthenticated");
    expect(err.reason).toBe("caller_key_invalid");
    expect(err.message).toBe("invalid caller key");
    expect(await rowsFor(id)).toBe(1);
  });

  it("L261 refuses a suspended key and one whose expiry was moved into the past, by the database's clock", async () => {
    const suspended = (await newKey()).summary;
    await suspendCallerKey(database.db, suspended.id, "probing", new Date());
    const expired = (await newKey()).summary;
    await expireCallerKeyBy(database.db, expired.id, new Date(Date.now() - 1000));
    for (const id of [suspended.id, expired.id]) {
      const err = await brokerErrorOf(log.record(started(id), { requireLiveCallerKey: true }));
      expect(err.code).toBe("unauthenticated");
      expect(await rowsFor(id)).toBe(0);
    }
    // An unknown id (a deleted row) is no live key either.
    const unknown = await brokerErrorOf(log.record(started("ck_unknown"), { requireLiveCallerKey: true }));
    expect(unknown.code).toBe("unauthenticated");
  });

  it("L262 a dead key's row leaves its batch: the other calls' rows commit, chained without a gap", async () => {
    const live = (await newKey()).summary;
    const dead = (await newKey()).summary;
    await revokeCallerKey(database.db, dead.id, new Date());
    const results = await Promise.allSettled([
      log.record(started(live.id), { requireLiveCallerKey: true }),
      log.record(started(dead.id), { requireLiveCallerKey: true }),
      log.record(started(live.id, { outcome: "ok" })),
      log.record(started(dead.id, { outcome: "error", code: "unauthenticated" })),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled", "fulfilled"]);
    expect(await rowsFor(live.id)).toBe(2);
    // A row that does not ask for the check is written whatever the key's state.
    expect(await rowsFor(dead.id)).toBe(1);
    expect((await verifyAuditChain(database.db)).ok).toBe(true);
  });

  it("L263 a sensitive call with a known caller key costs one round trip: the started row's commit", async () => {
    const created = await newKey();
    const { key } = created;
    const { id } = created.summary;
    const lookup = createCallerKeyLookup(prepared);
    const callers = createCallerAuthenticator({ lookup });
    // The first call reads the key (it was never seen); its row is the first append (head locked).
    await callers.authenticate(key, "proxy:call", undefined, { liveness: "at-audit" });
    await log.record(started(id), { requireLiveCallerKey: true });

    const before = prepared.count;
    const caller = await callers.authenticate(key, "proxy:call", undefined, { liveness: "at-audit" });
    expect(caller.livenessPending).toBe(true);
    await log.record(started(caller.keyId), { requireLiveCallerKey: true });
    expect(prepared.count - before).toBe(1);

    // And B20 holds: revoked on "another replica", the very next call is refused by that statement.
    await revokeCallerKey(database.db, id, new Date());
    const next = await callers.authenticate(key, "proxy:call", undefined, { liveness: "at-audit" });
    const err = await brokerErrorOf(log.record(started(next.keyId), { requireLiveCallerKey: true }));
    expect(err.code).toBe("unauthenticated");
    // Once dropped from memory, the key is read again and refused before anything else.
    callers.forget(id);
    const reread = await brokerErrorOf(
      callers.authenticate(key, "proxy:call", undefined, { liveness: "at-audit" }),
    );
    expect(reread.code).toBe("unauthenticated");
  });
});
