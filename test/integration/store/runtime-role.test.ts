import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { verifyAuditChain } from "../../../src/audit/audit-chain.js";
import { verifyAgainstCheckpoint } from "../../../src/audit/audit-checkpoint-verify.js";
import { createAuditCheckpointer } from "../../../src/audit/audit-checkpointer.js";
import { createAuditLog } from "../../../src/audit/audit-log.js";
import type { CliIo } from "../../../src/cli/cli-io.js";
import { runMigrate } from "../../../src/cli/migrate-command.js";
import { openLocalMacKey } from "../../../src/keys/local-mac-key.js";
import type { MacKey } from "../../../src/keys/mac-key.js";
import { createLogger } from "../../../src/log/logger.js";
import { Redacted } from "../../../src/log/redacted.js";
import { type DatabaseHandle, openDatabase } from "../../../src/store/database.js";
import { POSTGRES_SKIP_REASON } from "../../support/skip-reasons.js";
import { createThrowawayDatabase, type ThrowawayDatabase } from "../../support/throwaway-database.js";

// Review M1 on a real Postgres server: `keybroker migrate` runs as the owner and grants the role
// `serve` connects as; that role then holds no right to cut, wipe or unprotect the audit trail.

const adminUrl = process.env.TEST_DATABASE_URL;
const title = "the broker's runtime database role on postgres";

function io(env: Record<string, string>): CliIo & { out: string[] } {
  const out: string[] = [];
  return {
    env,
    out,
    stdout: { write: (text: string) => out.push(text) },
    stderr: { write: () => true },
  };
}

async function asAdmin(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

describe.skipIf(adminUrl === undefined)(
  adminUrl === undefined ? `${title} (${POSTGRES_SKIP_REASON})` : title,
  () => {
    const role = `kb_runtime_${randomBytes(5).toString("hex")}`;
    let throwaway: ThrowawayDatabase;
    let runtime: DatabaseHandle;
    let keyringDir: string;
    let macKey: MacKey;
    let migrateOutput: string;

    beforeAll(async () => {
      if (adminUrl === undefined) return;
      throwaway = await createThrowawayDatabase(adminUrl, "keybroker_roles");
      // Roles are server-wide: a random name, dropped after the database that holds its grants.
      await asAdmin(adminUrl, `create role ${role} login`);
      const migrate = io({ DATABASE_URL: throwaway.url, KEYBROKER_RUNTIME_DB_ROLE: role });
      expect(await runMigrate([], migrate)).toBe(0);
      migrateOutput = migrate.out.join("");
      const runtimeUrl = new URL(throwaway.url);
      runtimeUrl.username = role;
      runtime = await openDatabase(
        {
          kind: "postgres",
          url: new Redacted(runtimeUrl.toString()),
          maxConnections: 2,
          connectTimeoutMs: 5_000,
          statementTimeoutMs: 30_000,
        },
        createLogger({ level: "silent" }),
      );
      keyringDir = await mkdtemp(join(tmpdir(), "keybroker-runtime-role-"));
      macKey = await openLocalMacKey(join(keyringDir, "keyring.json"));
    });

    afterAll(async () => {
      macKey?.close();
      await runtime?.close();
      await throwaway?.drop();
      if (adminUrl !== undefined) await asAdmin(adminUrl, `drop role if exists ${role}`);
      if (keyringDir !== undefined) await rm(keyringDir, { recursive: true, force: true });
    });

    it("G59 migrate grants the runtime role what the broker writes: audit rows, the chain head, checkpoints", async () => {
      expect(migrateOutput).toContain(`runtime role ${role}: granted`);
      const log = createAuditLog({ prepared: runtime.prepared, batchMaxDelayMs: 0 });
      const checkpointer = createAuditCheckpointer({
        db: runtime.db,
        macKey,
        logger: createLogger({ level: "silent" }),
        intervalMs: 3_600_000,
        rows: 1_000,
        exportToLog: false,
      });
      for (let i = 0; i < 4; i++)
        await log.record({ requestId: `rt-${i}`, action: "secret.list", outcome: "ok" });
      await log.close();
      await checkpointer.close();

      expect(await verifyAuditChain(runtime.db)).toMatchObject({ ok: true, lastSeq: 4 });
      expect(await verifyAgainstCheckpoint(runtime.db, macKey)).toMatchObject({
        status: "covered",
        checkpointSeq: 4,
        uncoveredRows: 0,
      });
    });

    it("G59 the runtime role can neither TRUNCATE, UPDATE nor DELETE audit rows or checkpoints, nor disable or drop the audit triggers", async () => {
      const refused = [
        sql`truncate table audit_events`,
        sql`truncate table audit_chain_head`,
        sql`truncate table audit_checkpoints`,
        sql`update audit_events set target = 'forged'`,
        sql`delete from audit_events where seq > 2`,
        sql`delete from audit_chain_head`,
        sql`update audit_checkpoints set seq = 1`,
        sql`delete from audit_checkpoints`,
        sql`alter table audit_events disable trigger audit_events_append_only`,
        sql`alter table audit_events disable trigger user`,
        sql`drop trigger audit_events_no_truncate on audit_events`,
        sql`set session_replication_role = replica`,
        sql`insert into keybroker_migrations (name, timestamp) values ('9999_forged', now())`,
      ];
      for (const statement of refused) {
        await expect(statement.execute(runtime.db)).rejects.toThrow(/permission denied|must be owner/);
      }
      expect(await verifyAgainstCheckpoint(runtime.db, macKey)).toMatchObject({ status: "covered" });
    });

    it("G59 the runtime role still reads and writes the broker's other tables", async () => {
      await sql`insert into outbound_nonces (secret_id, last_nonce) values ('s-1', 1)`.execute(runtime.db);
      await sql`update outbound_nonces set last_nonce = 2 where secret_id = 's-1'`.execute(runtime.db);
      await sql`delete from outbound_nonces where secret_id = 's-1'`.execute(runtime.db);
      const applied = await sql<{ n: number }>`select count(*)::int as n from keybroker_migrations`.execute(
        runtime.db,
      );
      expect(applied.rows[0]?.n).toBeGreaterThan(0);
    });

    it("G59 migrate refuses a runtime role that is a superuser, the migrating role, or missing", async () => {
      if (adminUrl === undefined) return;
      const superuser = new URL(adminUrl).username || "postgres";
      for (const name of [superuser, `kb_missing_${randomBytes(4).toString("hex")}`]) {
        await expect(
          runMigrate([], io({ DATABASE_URL: throwaway.url, KEYBROKER_RUNTIME_DB_ROLE: name })),
        ).rejects.toThrow(/KEYBROKER_RUNTIME_DB_ROLE/);
      }
    });
  },
);
