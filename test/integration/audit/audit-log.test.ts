import { randomBytes } from "node:crypto";
import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { verifyAuditChain } from "../../../src/audit/audit-chain.js";
import type { AuditDetail, AuditEvent } from "../../../src/audit/audit-event.js";
import { type AuditLog, createAuditLog } from "../../../src/audit/audit-log.js";
import type { BrokerError } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import { Redacted } from "../../../src/log/redacted.js";
import { queryAuditEvents } from "../../../src/store/audit.repository.js";
import { type DatabaseHandle, openDatabase } from "../../../src/store/database.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  dumpAllRows,
  type TestDatabase,
} from "../../support/test-database.js";

const CANARY_SECRET = "CANARYsecret9876543210zyxwvutsrqpo";
const CANARY_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJDQU5BUlkifQ.CANARYsig0123456789";
const ALICE = randomBytes(32);
const BOB = randomBytes(32);

const event = (overrides: Partial<AuditEvent> = {}): AuditEvent => ({
  requestId: `req-${randomBytes(6).toString("hex")}`,
  action: "proxy.call",
  outcome: "ok",
  ...overrides,
});

function hasLineBreakingChar(text: string): boolean {
  return Array.from(text).some((c) => {
    const code = c.codePointAt(0) ?? 0;
    return code < 0x20 || (code >= 0x7f && code <= 0x9f) || code === 0x2028 || code === 0x2029;
  });
}

describeOnEachDatabase("audit log on %s", (kind) => {
  let database: TestDatabase;
  let log: AuditLog;
  let clock: number;
  const now = () => new Date(clock++);

  const rowCount = async () =>
    Number(
      (await sql<{ n: number }>`select count(*)::int as n from audit_events`.execute(database.db)).rows[0]?.n,
    );
  const headSeq = async () =>
    (await database.db.selectFrom("audit_chain_head").select("last_seq").executeTakeFirst())?.last_seq ?? 0;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });

  afterAll(async () => {
    await database.close();
  });

  beforeEach(async () => {
    await database.truncate();
    clock = Date.parse("2025-03-01T00:00:00Z");
    log = createAuditLog({ prepared: database.prepared, now });
  });

  it("commits an event before record() resolves and reads it back through the admin query", async () => {
    await log.record(
      event({
        requestId: "req-1",
        action: "secret.put",
        callerKeyId: "ck_00112233",
        userRef: ALICE,
        target: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
        detail: { provider: "binance", fieldCount: 2 },
      }),
    );
    const [row, ...rest] = await queryAuditEvents(database.db, { limit: 10 });
    expect(rest).toEqual([]);
    expect(row).toEqual({
      seq: 1,
      occurredAt: new Date("2025-03-01T00:00:00Z"),
      requestId: "req-1",
      callerKeyId: "ck_00112233",
      userRef: ALICE.toString("hex"),
      action: "secret.put",
      target: "7c9e6679-7425-40de-944b-e07fc1f90ae7",
      outcome: "ok",
      code: null,
      detail: { provider: "binance", fieldCount: 2 },
    });
  });

  it("filters by user, action, caller key and time, and pages after a seq", async () => {
    await log.record(event({ userRef: ALICE, action: "secret.list", callerKeyId: "ck_a" }));
    await log.record(event({ userRef: BOB, action: "secret.list", callerKeyId: "ck_b" }));
    await log.record(event({ userRef: ALICE, action: "proxy.call", callerKeyId: "ck_a" }));
    await log.record(event({ action: "auth.failure", outcome: "denied", code: "unauthenticated" }));
    const seqs = async (q: Parameters<typeof queryAuditEvents>[1]) =>
      (await queryAuditEvents(database.db, q)).map((r) => r.seq);

    expect(await seqs({ limit: 10, userRef: ALICE })).toEqual([1, 3]);
    expect(await seqs({ limit: 10, action: "secret.list" })).toEqual([1, 2]);
    expect(await seqs({ limit: 10, callerKeyId: "ck_b" })).toEqual([2]);
    expect(await seqs({ limit: 10, since: new Date(clock - 2), until: new Date(clock) })).toEqual([3, 4]);
    expect(await seqs({ limit: 2 })).toEqual([1, 2]);
    expect(await seqs({ limit: 2, afterSeq: 2 })).toEqual([3, 4]);
    const [denied] = await queryAuditEvents(database.db, { limit: 1, action: "auth.failure" });
    expect(denied).toMatchObject({ outcome: "denied", code: "unauthenticated", userRef: null });
    expect(Object.keys(denied ?? {})).not.toContain("hash");
  });

  it("rejects with unavailable when the insert fails, and reports the real cause", async () => {
    const failures: unknown[] = [];
    log = createAuditLog({ prepared: database.prepared, now, onWriteFailure: (err) => failures.push(err) });
    await sql`alter table audit_events rename to audit_events_moved`.execute(database.db);
    try {
      const err = await brokerErrorOf(log.record(event()));
      expect(err.code).toBe("unavailable");
      expect(err.message).toBe("audit trail unavailable");
      expect(err.cause).toBeDefined();
      expect(failures).toHaveLength(1);
      expect(failures[0]).toBe(err.cause);
    } finally {
      await sql`alter table audit_events_moved rename to audit_events`.execute(database.db);
    }
    await log.record(event());
    expect(await rowCount()).toBe(1);
  });

  it("writes nothing of a batch when one of its rows is refused, and continues the chain without a gap", async () => {
    await log.record(event());
    await sql`
      create function refuse_poison() returns trigger language plpgsql as $$
      begin
        if new.target = 'poison' then raise exception 'refused by test'; end if;
        return new;
      end $$`.execute(database.db);
    await sql`create trigger refuse_poison before insert on audit_events
      for each row execute function refuse_poison()`.execute(database.db);
    const batched = createAuditLog({ prepared: database.prepared, now, batchMaxDelayMs: 20 });
    try {
      const results = await Promise.allSettled(
        ["a", "b", "poison", "d", "e"].map((target) => batched.record(event({ target }))),
      );
      for (const result of results) {
        expect(result.status).toBe("rejected");
        expect(result.status === "rejected" && (result.reason as BrokerError).code).toBe("unavailable");
      }
      expect(await rowCount()).toBe(1);
      expect(await headSeq()).toBe(1);
    } finally {
      await sql`drop trigger refuse_poison on audit_events`.execute(database.db);
      await sql`drop function refuse_poison()`.execute(database.db);
    }
    await batched.record(event({ target: "after" }));
    const rows = await queryAuditEvents(database.db, { limit: 10 });
    expect(rows.map((r) => [r.seq, r.target])).toEqual([
      [1, null],
      [2, "after"],
    ]);
    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: 2, lastSeq: 2 });
  });

  it("refuses events after close(), having committed those recorded before", async () => {
    const pending = [log.record(event()), log.record(event())];
    await log.close();
    await Promise.all(pending);
    expect(await rowCount()).toBe(2);
    expect((await brokerErrorOf(log.record(event()))).code).toBe("unavailable");
  });

  it("flush() waits for queued events even with a long batch delay", async () => {
    const slow = createAuditLog({ prepared: database.prepared, now, batchMaxDelayMs: 60_000 });
    const pending = slow.record(event());
    await slow.flush();
    expect(await rowCount()).toBe(1);
    await pending;
  });

  it("writes events recorded together in one transaction per batch, split at batchMaxSize", async () => {
    // Rows inserted by one transaction share its id (xmin).
    const transactions = async () =>
      new Set(
        (await sql<{ x: string }>`select xmin::text as x from audit_events`.execute(database.db)).rows.map(
          (r) => r.x,
        ),
      ).size;
    const grouped = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
    await Promise.all(Array.from({ length: 5 }, () => grouped.record(event())));
    expect(await transactions()).toBe(1);

    await database.truncate();
    const split = createAuditLog({ prepared: database.prepared, batchMaxSize: 2 });
    await Promise.all(Array.from({ length: 5 }, () => split.record(event())));
    expect(await transactions()).toBe(3);
    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: 5, lastSeq: 5 });
  });

  it("writes a deferred event in the same transaction as the next urgent one, or alone when none comes", async () => {
    const transactions = async () =>
      new Set(
        (await sql<{ x: string }>`select xmin::text as x from audit_events`.execute(database.db)).rows.map(
          (r) => r.x,
        ),
      ).size;
    const deferring = createAuditLog({
      prepared: database.prepared,
      batchMaxDelayMs: 0,
      deferredMaxDelayMs: 60_000,
    });
    const outcome = deferring.record(event({ outcome: "ok" }), { deferred: true });
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(await transactions()).toBe(0); // waiting for company, not written on its own
    await deferring.record(event({ outcome: "started" }));
    await outcome;
    expect(await transactions()).toBe(1);

    const alone = createAuditLog({ prepared: database.prepared, deferredMaxDelayMs: 5 });
    await alone.record(event({ requestId: "alone" }), { deferred: true });
    expect(await transactions()).toBe(2);
    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: 3, lastSeq: 3 });
  });

  it("re-chains from the stored head when another writer appended since its own last batch", async () => {
    const first = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
    const other = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
    await first.record(event({ requestId: "first-1" }));
    await other.record(event({ requestId: "other-1" }));
    await first.record(event({ requestId: "first-2" }));
    await first.record(event({ requestId: "first-3" }));

    const rows = await database.db
      .selectFrom("audit_events")
      .select(["seq", "request_id"])
      .orderBy("seq")
      .execute();
    expect(rows).toEqual([
      { seq: 1, request_id: "first-1" },
      { seq: 2, request_id: "other-1" },
      { seq: 3, request_id: "first-2" },
      { seq: 4, request_id: "first-3" },
    ]);
    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: 4, lastSeq: 4 });
  });

  it("keeps one linear chain with 500 concurrent records from two replicas", async () => {
    // On Postgres the second replica has its own connection pool, as a second process would.
    const second: DatabaseHandle =
      database.url === undefined
        ? { ...database, close: async () => {} }
        : await openDatabase(
            {
              kind: "postgres",
              url: new Redacted(database.url),
              maxConnections: 3,
              connectTimeoutMs: 5_000,
              statementTimeoutMs: 30_000,
            },
            createLogger({ level: "silent" }),
          );
    try {
      const replicas = [
        createAuditLog({ prepared: database.prepared, batchMaxSize: 16 }),
        createAuditLog({ prepared: second.prepared, batchMaxSize: 16 }),
      ];
      const ids = Array.from({ length: 500 }, (_, i) => `req-${i}`);
      await Promise.all(ids.map((requestId, i) => replicas[i % 2]?.record(event({ requestId }))));

      const rows = await database.db
        .selectFrom("audit_events")
        .select(["seq", "request_id"])
        .orderBy("seq")
        .execute();
      expect(rows.map((r) => r.seq)).toEqual(Array.from({ length: 500 }, (_, i) => i + 1));
      expect(new Set(rows.map((r) => r.request_id))).toEqual(new Set(ids));
      expect(await verifyAuditChain(database.db, { batchSize: 64 })).toEqual({
        ok: true,
        rows: 500,
        lastSeq: 500,
      });
    } finally {
      await second.close();
    }
  });

  it("stores newlines and control characters in caller text escaped, so they cannot forge another entry", async () => {
    const forged = '\n{"seq":2,"action":"secret.delete","outcome":"ok"}\r\n';
    await log.record(
      event({ requestId: `r1${forged}`, target: `label${forged}`, callerKeyId: "ck_1\u2028x" }),
    );
    const raw = await sql<Record<string, unknown>>`select * from audit_events`.execute(database.db);
    expect(raw.rows).toHaveLength(1);
    const texts = Object.values(raw.rows[0] ?? {}).filter((v): v is string => typeof v === "string");
    expect(texts.length).toBeGreaterThanOrEqual(4);
    for (const text of texts) expect(hasLineBreakingChar(text)).toBe(false);
    const [row] = await queryAuditEvents(database.db, { limit: 10 });
    expect(row?.target).toBe('label\\u000a{"seq":2,"action":"secret.delete","outcome":"ok"}\\u000d\\u000a');
    expect(row?.callerKeyId).toBe("ck_1\\u2028x");
    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: 1, lastSeq: 1 });
  });

  it("never stores a canary secret or token passed by mistake, in any encoding", async () => {
    const smuggled = {
      provider: CANARY_SECRET,
      reason: CANARY_TOKEN,
      body: CANARY_SECRET,
    } as unknown as AuditDetail;
    await log.record(event({ target: CANARY_TOKEN, detail: smuggled }));
    const [row] = await queryAuditEvents(database.db, { limit: 1 });
    expect(row?.detail).toEqual({ provider: "[dropped]", reason: "[dropped]" });
    const dump = await dumpAllRows(database.db);
    for (const canary of [CANARY_SECRET, CANARY_TOKEN]) {
      for (const form of [
        canary,
        Buffer.from(canary).toString("hex"),
        Buffer.from(canary).toString("base64"),
      ]) {
        expect(dump).not.toContain(form);
      }
    }
  });

  it("is append-only for the broker: updates and deletes are refused by the database", async () => {
    await log.record(event({ detail: { provider: "binance" } }));
    await expect(sql`update audit_events set detail = '{}'::jsonb`.execute(database.db)).rejects.toThrow(
      /append-only/,
    );
    await expect(sql`delete from audit_events`.execute(database.db)).rejects.toThrow(/append-only/);
    expect(await rowCount()).toBe(1);
  });
});
