import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { verifyAuditChain } from "../../../src/audit/audit-chain.js";
import type { AuditEvent } from "../../../src/audit/audit-event.js";
import { type AuditBatchPath, createAuditLog } from "../../../src/audit/audit-log.js";
import { countingRunner } from "../../support/counting-runner.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

const event = (): AuditEvent => ({
  requestId: `req-${randomBytes(6).toString("hex")}`,
  action: "secret.list",
  outcome: "ok",
});

/**
 * Issue 17 item 3: the chain head is where replicas and workers meet. Each committed batch says
 * how it got there, so the contention shows in the metrics (keybroker_audit_batch_seconds{path}).
 */
describeOnEachDatabase("audit batches report how they reached the chain head on %s", (kind) => {
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

  function writer() {
    const batches: Array<{ path: AuditBatchPath; rows: number }> = [];
    const prepared = countingRunner(database.prepared);
    const log = createAuditLog({
      prepared,
      onBatch: ({ path, rows, durationMs }) => {
        expect(durationMs).toBeGreaterThanOrEqual(0);
        batches.push({ path, rows });
      },
    });
    return { log, batches, prepared };
  }

  it("L287 locked first, then one optimistic statement per batch; a batch after another writer's is head_moved, and the chain stays whole", async () => {
    const a = writer();
    const b = writer();
    await a.log.record(event());
    await Promise.all([a.log.record(event()), a.log.record(event())]);
    const before = a.prepared.count;
    await a.log.record(event());
    expect(a.prepared.count - before).toBe(1);
    expect(a.batches).toEqual([
      { path: "locked", rows: 1 },
      { path: "optimistic", rows: 2 },
      { path: "optimistic", rows: 1 },
    ]);

    // Another replica (or worker) appends: each writer's next batch finds the head elsewhere.
    await b.log.record(event());
    await a.log.record(event());
    await b.log.record(event());
    expect(b.batches.map((x) => x.path)).toEqual(["locked", "head_moved"]);
    expect(a.batches.at(-1)).toEqual({ path: "head_moved", rows: 1 });
    expect(await verifyAuditChain(database.db)).toMatchObject({ ok: true });
  });
});
