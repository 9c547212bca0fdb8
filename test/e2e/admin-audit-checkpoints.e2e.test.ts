import { sql } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { unary, type WireMessage } from "../support/grpc-client.js";
import { describeOnEachDatabase } from "../support/test-database.js";

const POLL_MS = 50;
const MAX_POLLS = 200;

interface Verdict {
  ok: boolean;
  rows: string;
  reason: string;
  checkpoint: { status: string; checkpointSeq: string; uncoveredRows: string } | null;
}

// AdminService VerifyAudit checks the trail against its newest signed checkpoint, as
// `keybroker audit verify` does: a cut of the newest rows, with the chain head moved back to
// match, passes the chain walk and is caught only by the checkpoint.
describeOnEachDatabase("AdminService VerifyAudit with signed checkpoints on %s", (kind) => {
  let broker: BrokerHarness;
  let adminKey: string;

  beforeAll(async () => {
    broker = await startBroker(kind, {
      KEYBROKER_AUDIT_CHECKPOINT_KEY_ID: "alias/keybroker-audit",
      KEYBROKER_AUDIT_CHECKPOINT_INTERVAL_MS: "100",
      KEYBROKER_AUDIT_CHECKPOINT_ROWS: "1",
    });
    adminKey = (await broker.callerKey(["admin"])).key;
  });

  afterAll(async () => {
    await broker?.close();
  });

  const verifyAudit = async (): Promise<Verdict> =>
    (await unary(broker.clients.admin, "VerifyAudit", {} as WireMessage, { callerKey: adminKey }))
      .response as unknown as Verdict;

  it("G59 reports the checkpoint that covers the trail, then a cut that the chain walk alone misses", async () => {
    // Audited operator actions (reads are not audited).
    for (let i = 0; i < 4; i++) {
      await unary(
        broker.clients.admin,
        "CreateCallerKey",
        { name: `reporting-${i}`, scopes: ["secrets:read"] },
        { callerKey: adminKey },
      );
    }
    let verdict = await verifyAudit();
    for (let i = 0; i < MAX_POLLS && Number(verdict.checkpoint?.checkpointSeq ?? 0) < 4; i++) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      verdict = await verifyAudit();
    }
    expect(verdict).toMatchObject({ ok: true, checkpoint: { status: "covered" } });
    const signedSeq = Number(verdict.checkpoint?.checkpointSeq);
    expect(signedSeq).toBeGreaterThanOrEqual(4);

    // A tamperer with owner rights cuts the newest rows and moves the chain head back to match.
    const db = broker.database.db;
    await sql`alter table audit_events disable trigger user`.execute(db);
    await sql`delete from audit_events where seq > 2`.execute(db);
    await sql`update audit_chain_head set last_seq = 2, last_hash = (select hash from audit_events where seq = 2)`.execute(
      db,
    );
    await sql`alter table audit_events enable trigger user`.execute(db);

    const cut = await verifyAudit();
    expect(cut.ok).toBe(false);
    expect(["cut", "rewritten"]).toContain(cut.checkpoint?.status);
    expect(cut.reason).toMatch(/newest signed checkpoint shows the trail (cut|rewritten)/);
  });
});
