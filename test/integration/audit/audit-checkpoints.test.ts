import { randomBytes } from "node:crypto";
import type { KMSClient } from "@aws-sdk/client-kms";
import { type RawBuilder, sql } from "kysely";
import { afterAll, afterEach, beforeAll, beforeEach, expect, it } from "vitest";
import { chainHash, verifyAuditChain } from "../../../src/audit/audit-chain.js";
import { verifyAgainstCheckpoint } from "../../../src/audit/audit-checkpoint-verify.js";
import { type AuditCheckpointer, createAuditCheckpointer } from "../../../src/audit/audit-checkpointer.js";
import { type AuditLog, createAuditLog } from "../../../src/audit/audit-log.js";
import { createKmsClient } from "../../../src/keys/aws-kms-keyring.js";
import { createAwsKmsMacKey } from "../../../src/keys/aws-kms-mac-key.js";
import type { MacKey } from "../../../src/keys/mac-key.js";
import { readAuditRowsAfter } from "../../../src/store/audit.repository.js";
import { readNewestAuditCheckpoint } from "../../../src/store/audit-checkpoints.repository.js";
import { type CapturedLogs, captureLogs } from "../../support/captured-logs.js";
import { type LocalKmsServer, startLocalKmsServer } from "../../support/local-kms-server.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

// Checkpoints signed by an HMAC key in the local KMS (the real SDK's GenerateMac / VerifyMac),
// against a trail tampered with by someone with the tables' owner rights: the attacker the
// hash chain alone cannot stop, since they can recompute every hash and move the head.

const ROWS = 10;
const credentials = { accessKeyId: "AKIDLOCALTEST", secretAccessKey: "local-test-secret" };

let kms: LocalKmsServer;
let macKeyArn: string;
let otherMacKeyArn: string;
let client: KMSClient;
let macKey: MacKey;

beforeAll(async () => {
  kms = await startLocalKmsServer();
  macKeyArn = kms.createKey("audit checkpoints", "HMAC_256");
  otherMacKeyArn = kms.createKey("a key the attacker controls", "HMAC_256");
  client = createKmsClient({ region: kms.region, endpoint: kms.endpoint, maxAttempts: 1, credentials });
  macKey = createAwsKmsMacKey({ client, keyArn: macKeyArn });
});

afterAll(async () => {
  macKey.close();
  await kms.close();
});

describeOnEachDatabase("signed audit checkpoints on %s", (kind) => {
  let database: TestDatabase;
  let log: AuditLog;
  let checkpointer: AuditCheckpointer;
  let logs: CapturedLogs;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });

  afterAll(async () => {
    await database.close();
  });

  beforeEach(async () => {
    await database.truncate();
    logs = captureLogs("info");
    // No timer tick during a test: only the row count (5) and explicit calls make checkpoints.
    checkpointer = createAuditCheckpointer({
      db: database.db,
      macKey,
      logger: logs.logger,
      intervalMs: 3_600_000,
      rows: 5,
      exportToLog: true,
    });
    log = createAuditLog({
      prepared: database.prepared,
      batchMaxDelayMs: 0,
      onAppended: (lastSeq) => checkpointer.noteAppended(lastSeq),
    });
  });

  afterEach(async () => {
    await log.close();
    await checkpointer.close();
  });

  async function record(count: number): Promise<void> {
    for (let i = 0; i < count; i++) {
      await log.record({
        requestId: `req-${randomBytes(4).toString("hex")}`,
        action: "proxy.call",
        outcome: "ok",
        userRef: randomBytes(32),
        target: `secret-${i}`,
        detail: { provider: "binance", upstreamStatus: 200 },
      });
    }
  }

  // The owner of the tables switches the audit triggers off, as only the owner can.
  async function asOwner(...statements: RawBuilder<unknown>[]): Promise<void> {
    await database.db.transaction().execute(async (tx) => {
      await sql`alter table audit_events disable trigger user`.execute(tx);
      await sql`alter table audit_chain_head disable trigger user`.execute(tx);
      await sql`alter table audit_checkpoints disable trigger user`.execute(tx);
      for (const statement of statements) await statement.execute(tx);
      await sql`alter table audit_events enable trigger user`.execute(tx);
      await sql`alter table audit_chain_head enable trigger user`.execute(tx);
      await sql`alter table audit_checkpoints enable trigger user`.execute(tx);
    });
  }

  /** Rewrites row `seq`'s target and recomputes every later hash and the head: the chain verifies. */
  async function rewriteAndRechain(seq: number): Promise<void> {
    const rows = await readAuditRowsAfter(database.db, 0, 1000);
    const statements: RawBuilder<unknown>[] = [];
    let prev = rows[seq - 2]?.hash ?? Buffer.alloc(32);
    for (const row of rows.filter((r) => r.seq >= seq)) {
      const target = row.seq === seq ? "secret-forged" : row.target;
      const hash = chainHash(prev, row.seq, {
        occurredAt: row.occurredAt,
        requestId: row.requestId,
        callerKeyId: row.callerKeyId,
        userRef: row.userRef,
        action: row.action,
        target,
        outcome: row.outcome,
        code: row.code,
        detail: row.detail,
      });
      statements.push(
        sql`update audit_events set target = ${target}, prev_hash = ${prev}, hash = ${hash} where seq = ${row.seq}`,
      );
      prev = hash;
    }
    statements.push(sql`update audit_chain_head set last_hash = ${prev}`);
    await asOwner(...statements);
  }

  async function checkpointed(): Promise<number> {
    await checkpointer.checkpoint();
    return (await readNewestAuditCheckpoint(database.db))?.seq ?? 0;
  }

  it("G59 signs the chain head in the background after N rows, and verify counts the rows not yet covered", async () => {
    await record(5);
    // The fifth row's commit started a checkpoint nobody awaited; wait for it (bounded).
    for (let i = 0; i < 200 && (await readNewestAuditCheckpoint(database.db)) === undefined; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect((await readNewestAuditCheckpoint(database.db))?.seq).toBe(5);
    await record(3);

    expect(await verifyAgainstCheckpoint(database.db, macKey)).toMatchObject({
      status: "covered",
      checkpointSeq: 5,
      uncoveredRows: 3,
    });
    // Exported as a log line for storage off this database.
    const exported = logs.lines.map((line) => JSON.parse(line)).find((line) => line.auditCheckpoint);
    expect(exported?.auditCheckpoint).toMatchObject({ seq: 5, keyId: macKeyArn });
    expect(exported?.auditCheckpoint.mac).toMatch(/^[0-9a-f]{64}$/);
  });

  it("G59 reports no checkpoint and every row uncovered before the first one is signed", async () => {
    await record(3);
    expect(await verifyAgainstCheckpoint(database.db, macKey)).toEqual({ status: "none", uncoveredRows: 3 });
  });

  it("G59 reports a cut tail a checkpoint covers, although the chain with its head rewound verifies", async () => {
    await record(ROWS);
    expect(await checkpointed()).toBe(ROWS);

    await asOwner(
      sql`delete from audit_events where seq > 7`,
      sql`update audit_chain_head set last_seq = 7, last_hash = (select hash from audit_events where seq = 7)`,
    );

    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: 7, lastSeq: 7 });
    expect(await verifyAgainstCheckpoint(database.db, macKey)).toMatchObject({
      status: "cut",
      checkpointSeq: ROWS,
    });
  });

  it("G59 reports a wiped trail a checkpoint covers, although an empty chain verifies", async () => {
    await record(ROWS);
    expect(await checkpointed()).toBe(ROWS);

    await asOwner(sql`delete from audit_events`, sql`delete from audit_chain_head`);

    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: 0, lastSeq: 0 });
    expect(await verifyAgainstCheckpoint(database.db, macKey)).toMatchObject({
      status: "wiped",
      checkpointSeq: ROWS,
    });
  });

  it("G59 reports a covered row rewritten with every later hash and the head recomputed", async () => {
    await record(ROWS);
    expect(await checkpointed()).toBe(ROWS);

    await rewriteAndRechain(3);

    expect(await verifyAuditChain(database.db)).toEqual({ ok: true, rows: ROWS, lastSeq: ROWS });
    expect(await verifyAgainstCheckpoint(database.db, macKey)).toMatchObject({
      status: "rewritten",
      checkpointSeq: ROWS,
    });
  });

  it("G59 refuses a checkpoint edited to match a rewrite, or re-signed under a key the attacker controls", async () => {
    await record(ROWS);
    expect(await checkpointed()).toBe(ROWS);
    await rewriteAndRechain(3);

    await asOwner(
      sql`update audit_checkpoints set chain_hash = (select hash from audit_events where seq = ${ROWS})`,
    );
    expect(await verifyAgainstCheckpoint(database.db, macKey)).toMatchObject({ status: "forged" });

    // A MAC the attacker made with their own HMAC key, over the rewritten head: valid in KMS,
    // but not under the configured key.
    const attacker = createAwsKmsMacKey({
      client: createKmsClient({ region: kms.region, endpoint: kms.endpoint, maxAttempts: 1, credentials }),
      keyArn: otherMacKeyArn,
    });
    try {
      const forged = createAuditCheckpointer({
        db: database.db,
        macKey: attacker,
        logger: logs.logger,
        intervalMs: 3_600_000,
        rows: 1_000,
        exportToLog: false,
      });
      await record(1);
      await forged.close();
    } finally {
      attacker.close();
    }
    expect((await readNewestAuditCheckpoint(database.db))?.keyId).toBe(otherMacKeyArn);
    expect(await verifyAgainstCheckpoint(database.db, macKey)).toMatchObject({ status: "forged" });
  });

  it("G59 refuses TRUNCATE, UPDATE and DELETE on the audit tables while their triggers are on", async () => {
    await record(ROWS);
    expect(await checkpointed()).toBe(ROWS);
    for (const table of ["audit_events", "audit_chain_head", "audit_checkpoints"]) {
      await expect(sql`truncate table ${sql.table(table)} cascade`.execute(database.db)).rejects.toThrow(
        /append-only/,
      );
    }
    await expect(sql`delete from audit_checkpoints`.execute(database.db)).rejects.toThrow(/append-only/);
    await expect(sql`update audit_checkpoints set seq = 1`.execute(database.db)).rejects.toThrow(
      /append-only/,
    );
    expect(await verifyAgainstCheckpoint(database.db, macKey)).toMatchObject({
      status: "covered",
      uncoveredRows: 0,
    });
  });
});
