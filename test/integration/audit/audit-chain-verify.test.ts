import { randomBytes } from "node:crypto";
import { type RawBuilder, sql } from "kysely";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { chainHash, verifyAuditChain } from "../../../src/audit/audit-chain.js";
import { createAuditLog } from "../../../src/audit/audit-log.js";
import { readAuditRowsAfter } from "../../../src/store/audit.repository.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

const ROWS = 20;
// The columns an attacker would move when swapping two events, hashes excluded.
const CONTENT = [
  "occurred_at",
  "request_id",
  "caller_key_id",
  "user_ref",
  "action",
  "target",
  "outcome",
  "code",
  "detail",
];

describeOnEachDatabase("audit chain verification on %s", (kind) => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });

  afterAll(async () => {
    await database.close();
  });

  beforeEach(async () => {
    await database.truncate();
    const log = createAuditLog({ prepared: database.prepared, batchMaxSize: 7 });
    await Promise.all(
      Array.from({ length: ROWS }, (_, i) =>
        log.record({
          requestId: `req-${i + 1}`,
          action: i % 2 === 0 ? "secret.put" : "proxy.call",
          outcome: "ok",
          userRef: randomBytes(32),
          target: `secret-${i + 1}`,
          detail: { provider: "binance", upstreamStatus: 200 },
        }),
      ),
    );
  });

  // Plays an attacker with owner rights: the append-only trigger is theirs to switch off.
  async function tamper(...statements: RawBuilder<unknown>[]): Promise<void> {
    await sql`alter table audit_events disable trigger audit_events_append_only`.execute(database.db);
    try {
      for (const statement of statements) await statement.execute(database.db);
    } finally {
      await sql`alter table audit_events enable trigger audit_events_append_only`.execute(database.db);
    }
  }

  function swap(a: number, b: number, columns: readonly string[]): RawBuilder<unknown> {
    const sets = sql.join(columns.map((c) => sql`${sql.ref(c)} = other.${sql.ref(c)}`));
    return sql`update audit_events as row set ${sets} from audit_events as other
      where (row.seq = ${a} and other.seq = ${b}) or (row.seq = ${b} and other.seq = ${a})`;
  }

  it("accepts an untouched chain with any batch size, and from a later seq", async () => {
    for (const batchSize of [1, 3, ROWS, 1000]) {
      expect(await verifyAuditChain(database.db, { batchSize })).toEqual({
        ok: true,
        rows: ROWS,
        lastSeq: ROWS,
      });
    }
    expect(await verifyAuditChain(database.db, { fromSeq: 11, batchSize: 4 })).toEqual({
      ok: true,
      rows: 10,
      lastSeq: ROWS,
    });
  });

  it("E49 names an edited row when one row's detail is changed", async () => {
    await tamper(
      sql`update audit_events set detail = '{"provider":"kraken","upstreamStatus":200}' where seq = 7`,
    );
    expect(await verifyAuditChain(database.db, { batchSize: 3 })).toEqual({
      ok: false,
      rows: 6,
      firstBadSeq: 7,
      reason: "hash_mismatch",
    });
  });

  it("names an edited row when its time moves by one millisecond", async () => {
    await tamper(
      sql`update audit_events set occurred_at = occurred_at + interval '1 millisecond' where seq = 12`,
    );
    expect(await verifyAuditChain(database.db)).toMatchObject({
      ok: false,
      firstBadSeq: 12,
      reason: "hash_mismatch",
    });
  });

  it("E49 names a deleted row as a gap", async () => {
    await tamper(sql`delete from audit_events where seq = 7`);
    expect(await verifyAuditChain(database.db, { batchSize: 3 })).toEqual({
      ok: false,
      rows: 6,
      firstBadSeq: 7,
      reason: "gap",
    });
  });

  it("names the last row when it is deleted, by comparing with the chain head", async () => {
    await tamper(sql`delete from audit_events where seq = ${ROWS}`);
    expect(await verifyAuditChain(database.db)).toMatchObject({
      ok: false,
      firstBadSeq: ROWS,
      reason: "gap",
    });
  });

  it("names a deleted row whose successors were renumbered to close the gap", async () => {
    await tamper(
      sql`delete from audit_events where seq = 7`,
      sql`update audit_events set seq = -seq where seq > 7`,
      sql`update audit_events set seq = -seq - 1 where seq < 0`,
    );
    expect(await verifyAuditChain(database.db)).toMatchObject({
      ok: false,
      firstBadSeq: 7,
      reason: "prev_hash_mismatch",
    });
  });

  it("E49 names the first of two rows whose contents were swapped", async () => {
    await tamper(swap(7, 8, CONTENT));
    expect(await verifyAuditChain(database.db)).toMatchObject({
      ok: false,
      firstBadSeq: 7,
      reason: "hash_mismatch",
    });
  });

  it("E49 names the first of two rows swapped with their hashes as out of order", async () => {
    await tamper(swap(7, 8, [...CONTENT, "prev_hash", "hash"]));
    expect(await verifyAuditChain(database.db)).toEqual({
      ok: false,
      rows: 6,
      firstBadSeq: 7,
      reason: "out_of_order",
    });
  });

  it("names the next row when an edited row's own hash was recomputed", async () => {
    const [row] = await readAuditRowsAfter(database.db, 6, 1);
    if (row === undefined) throw new Error("row 7 missing");
    const forged = { ...row, target: "secret-forged" };
    const hash = chainHash(row.prevHash, row.seq, forged);
    await tamper(sql`update audit_events set target = 'secret-forged', hash = ${hash} where seq = 7`);
    expect(await verifyAuditChain(database.db)).toMatchObject({
      ok: false,
      firstBadSeq: 8,
      reason: "prev_hash_mismatch",
    });
  });

  it("names rows the chain head does not account for when the head is rolled back", async () => {
    await sql`update audit_chain_head set last_seq = 10, last_hash = (select hash from audit_events where seq = 10)`.execute(
      database.db,
    );
    expect(await verifyAuditChain(database.db)).toMatchObject({
      ok: false,
      firstBadSeq: 11,
      reason: "out_of_order",
    });
  });

  it("reports a missing anchor row when verifying from a later seq", async () => {
    await tamper(sql`delete from audit_events where seq = 9`);
    expect(await verifyAuditChain(database.db, { fromSeq: 10 })).toMatchObject({
      ok: false,
      firstBadSeq: 9,
      reason: "gap",
    });
  });

  it("keeps verifying while a replica appends during the walk", async () => {
    const log = createAuditLog({ prepared: database.prepared });
    const appending = Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        log.record({ requestId: `late-${i}`, action: "secret.list", outcome: "ok" }),
      ),
    );
    const verdict = await verifyAuditChain(database.db, { batchSize: 2 });
    await appending;
    expect(verdict.ok).toBe(true);
    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: ROWS + 50, lastSeq: ROWS + 50 });
  });
});
