import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLogger } from "../../src/log/logger.js";
import { suspendCallerKey } from "../../src/store/caller-keys.repository.js";
import { openDatabase } from "../../src/store/database.js";

const run = promisify(execFile);
const BIN = new URL("../../bin/keybroker.js", import.meta.url).pathname;

/** `keybroker caller-keys reinstate`, run as a process against an embedded database directory. */
describe("keybroker caller-keys reinstate", () => {
  let dir: string;
  const env = () => ({
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "",
    KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
    KEYBROKER_PGLITE_DIR: join(dir, "pgdata"),
  });
  const cli = (...args: string[]) => run(process.execPath, [BIN, ...args], { env: env() });

  /** The embedded database, opened between commands (one process at a time may hold it). */
  async function withDatabase<T>(
    work: (db: Awaited<ReturnType<typeof openDatabase>>) => Promise<T>,
  ): Promise<T> {
    const database = await openDatabase(
      { kind: "pglite", dataDir: join(dir, "pgdata") },
      createLogger({ level: "silent" }),
    );
    try {
      return await work(database);
    } finally {
      await database.close();
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-reinstate-"));
    await cli("migrate");
  }, 180_000); // a cold migration in a spawned process: a minute or more on a loaded machine

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("H122 lists a suspended key with its signal, reinstates it, and audits the reinstatement", async () => {
    const created = await cli("caller-keys", "create", "--name", "main-app", "--scopes", "proxy:call");
    const id = /id=(ck_[0-9a-f]+)/.exec(created.stdout)?.[1] ?? "";
    await withDatabase((database) => suspendCallerKey(database.db, id, "probing", new Date()));

    expect((await cli("caller-keys", "list")).stdout).toContain("suspended(probing)");
    expect((await cli("caller-keys", "reinstate", id)).stdout).toBe(`reinstated ${id}\n`);
    expect((await cli("caller-keys", "list")).stdout).toContain("\tactive\t");

    const rows = await withDatabase((database) =>
      database.db
        .selectFrom("audit_events")
        .select(["action", "target", "outcome"])
        .where("action", "=", "caller_key.reinstate")
        .orderBy("seq")
        .execute(),
    );
    expect(rows).toEqual([
      { action: "caller_key.reinstate", target: id, outcome: "started" },
      { action: "caller_key.reinstate", target: id, outcome: "ok" },
    ]);
  }, 300_000);

  it("H122 refuses to reinstate a key that is not suspended, with exit code 1", async () => {
    const created = await cli("caller-keys", "create", "--name", "other-app", "--scopes", "proxy:call");
    const id = /id=(ck_[0-9a-f]+)/.exec(created.stdout)?.[1] ?? "";

    const err = await cli("caller-keys", "reinstate", id).then(
      () => undefined,
      (e: { code?: number; stderr?: string }) => e,
    );

    expect(err?.code).toBe(1);
    expect(err?.stderr).toContain("no suspended caller key with that id");
  }, 180_000);
});
