import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { sql } from "kysely";
import { afterEach, beforeEach, describe, expect, inject, it } from "vitest";
import { createAuditCheckpointer } from "../../../src/audit/audit-checkpointer.js";
import { createAuditLog } from "../../../src/audit/audit-log.js";
import { runAudit } from "../../../src/cli/audit-command.js";
import type { CliIo } from "../../../src/cli/cli-io.js";
import { openLocalMacKey } from "../../../src/keys/local-mac-key.js";
import { createLogger } from "../../../src/log/logger.js";
import { type DatabaseHandle, openDatabase } from "../../../src/store/database.js";

// `keybroker audit verify` as an operator runs it, on a data directory the broker wrote.

describe("keybroker audit verify with signed checkpoints", () => {
  let dir: string;
  let env: Record<string, string>;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-audit-verify-"));
    const template = await readFile(inject("pgliteTemplate"));
    const pglite = await PGlite.create({ dataDir: join(dir, "pglite"), loadDataDir: new Blob([template]) });
    await pglite.close();
    env = {
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_PGLITE_DIR: join(dir, "pglite"),
      KEYBROKER_KEYRING: "local",
      KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      KEYBROKER_LOCAL_KEYRING_FILE: join(dir, "keyring.json"),
      LOG_LEVEL: "silent",
    };
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function withDatabase(use: (database: DatabaseHandle) => Promise<void>): Promise<void> {
    const database = await openDatabase(
      { kind: "pglite", dataDir: join(dir, "pglite") },
      createLogger({ level: "silent" }),
    );
    try {
      await use(database);
    } finally {
      await database.close();
    }
  }

  async function verify(
    overrides: Record<string, string | undefined> = {},
  ): Promise<{ code: number; out: string }> {
    const out: string[] = [];
    const io: CliIo = {
      env: { ...env, ...overrides },
      stdout: { write: (text: string) => out.push(text) },
      stderr: { write: () => true },
    };
    const code = await runAudit(["verify"], io);
    return { code, out: out.join("") };
  }

  // Five reopens of the PGlite directory and three command runs: minutes on a loaded machine.
  it("G59 says how many rows the newest checkpoint covers, and exits 1 naming a cut tail", {
    timeout: 180_000,
  }, async () => {
    await withDatabase(async (database) => {
      const macKey = await openLocalMacKey(env.KEYBROKER_LOCAL_KEYRING_FILE ?? "");
      const checkpointer = createAuditCheckpointer({
        db: database.db,
        macKey,
        logger: createLogger({ level: "silent" }),
        intervalMs: 3_600_000,
        rows: 1_000,
        exportToLog: false,
      });
      const log = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
      for (let i = 0; i < 6; i++)
        await log.record({ requestId: `v-${i}`, action: "secret.list", outcome: "ok" });
      await checkpointer.checkpoint();
      for (let i = 0; i < 2; i++)
        await log.record({ requestId: `w-${i}`, action: "secret.list", outcome: "ok" });
      await log.close();
      await checkpointer.close();
      macKey.close();
    });
    // The checkpointer's close signed seq 8; take it back to what the first checkpoint covered.
    await withDatabase(async (database) => {
      await sql`alter table audit_checkpoints disable trigger user`.execute(database.db);
      await sql`delete from audit_checkpoints where seq > 6`.execute(database.db);
      await sql`alter table audit_checkpoints enable trigger user`.execute(database.db);
    });

    const intact = await verify();
    expect(intact.code).toBe(0);
    expect(intact.out).toContain("audit chain intact: 8 rows");
    expect(intact.out).toMatch(/checkpoint of seq 6 .* holds; 2 rows not yet covered/);

    await withDatabase(async (database) => {
      await sql`alter table audit_events disable trigger user`.execute(database.db);
      await sql`delete from audit_events where seq > 4`.execute(database.db);
      await sql`update audit_chain_head set last_seq = 4, last_hash = (select hash from audit_events where seq = 4)`.execute(
        database.db,
      );
    });
    const cut = await verify();
    expect(cut.code).toBe(1);
    expect(cut.out).toContain("audit chain intact: 4 rows");
    expect(cut.out).toContain("audit trail CUT");

    // Without a keyring the checkpoints cannot be checked, and the command says so.
    const unchecked = await verify({ KEYBROKER_KEYRING: undefined });
    expect(unchecked.out).toContain("checkpoints NOT checked");
  });
});
