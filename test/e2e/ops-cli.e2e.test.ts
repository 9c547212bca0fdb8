import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { sql } from "kysely";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createAuditLog } from "../../src/audit/audit-log.js";
import { createLogger } from "../../src/log/logger.js";
import { openDatabase } from "../../src/store/database.js";

const run = promisify(execFile);
const BIN = new URL("../../bin/keybroker.js", import.meta.url).pathname;

/** The operator's CLI, run as a process against an embedded database directory. */
describe("keybroker operator commands", () => {
  let dir: string;
  const env = () => ({
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "",
    KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
    KEYBROKER_PGLITE_DIR: join(dir, "pgdata"),
  });
  const cli = (...args: string[]) => run(process.execPath, [BIN, ...args], { env: env() });
  const cliFailure = (...args: string[]) =>
    cli(...args).then(
      () => undefined,
      (err: { code?: number; stdout?: string; stderr?: string }) => err,
    );

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-ops-"));
    await cli("migrate");
  }, 180_000); // a cold migration in a spawned process: a minute or more on a loaded machine

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("B19 creates a caller key, shows it once, and lists only its last four characters", {
    timeout: 120_000,
  }, async () => {
    const { stdout } = await cli(
      "caller-keys",
      "create",
      "--name",
      "main-app",
      "--scopes",
      "secrets:read,proxy:call",
    );
    const key = stdout.split("\n")[0] ?? "";
    expect(key).toMatch(/^kbk_\w{38}$/);
    expect(stdout).toContain("shown once");
    const list = await cli("caller-keys", "list");
    expect(list.stdout).toContain(`kbk_…${key.slice(-4)}`);
    expect(list.stdout).not.toContain(key);
    expect(list.stdout).toContain("active");
  });

  it("refuses an unknown scope with a clear message and exit code 1", { timeout: 120_000 }, async () => {
    const err = await cliFailure("caller-keys", "create", "--name", "x", "--scopes", "secrets:everything");
    expect(err?.code).toBe(1);
    expect(err?.stderr).toContain("unknown scope(s): secrets:everything");
  });

  // Four CLI processes (tsx start-up + PGlite reopen each): allow for a loaded CI machine.
  it("rotates a caller key with an overlap and revokes the old one", { timeout: 240_000 }, async () => {
    const list = await cli("caller-keys", "list");
    const id = /^(ck_[0-9a-f]{16})\tmain-app/m.exec(list.stdout)?.[1] ?? "";
    const rotated = await cli("caller-keys", "rotate", id, "--overlap-hours", "1");
    expect(rotated.stdout.split("\n")[0]).toMatch(/^kbk_/);
    expect(rotated.stdout).toContain(`old key (${id}) stops working at`);
    await cli("caller-keys", "revoke", id);
    expect((await cli("caller-keys", "list")).stdout).toMatch(new RegExp(`${id}\\tmain-app.*\\trevoked\\t`));
    expect((await cliFailure("caller-keys", "revoke", id))?.code).toBe(1);
  });

  // Three CLI processes plus an in-process reopen of the data directory: allow for a loaded machine.
  it("E49 verifies the audit chain, then names the first row someone edited", {
    timeout: 240_000,
  }, async () => {
    const database = await openDatabase(
      { kind: "pglite", dataDir: join(dir, "pgdata") },
      createLogger({ level: "silent" }),
    );
    try {
      const audit = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
      for (let i = 0; i < 5; i++)
        await audit.record({ requestId: `cli-${i}`, action: "secret.list", outcome: "ok" });
      await audit.close();
    } finally {
      await database.close();
    }
    expect((await cli("audit", "verify")).stdout).toContain("audit chain intact: 5 rows");
    const query = await cli("audit", "query", "--action", "secret.list", "--limit", "2");
    expect(
      query.stdout
        .trim()
        .split("\n")
        .map((line) => JSON.parse(line).seq),
    ).toEqual([1, 2]);

    const again = await openDatabase(
      { kind: "pglite", dataDir: join(dir, "pgdata") },
      createLogger({ level: "silent" }),
    );
    try {
      await sql`alter table audit_events disable trigger user`.execute(again.db);
      await sql`update audit_events set request_id = 'forged' where seq = 3`.execute(again.db);
    } finally {
      await again.close();
    }
    const broken = await cliFailure("audit", "verify");
    expect(broken?.code).toBe(1);
    expect(broken?.stdout).toContain("audit chain BROKEN at seq 3");
  });
});
