import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { sql } from "kysely";
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createOAuthAppStore } from "../../src/oauth/oauth-app-store.js";
import { readKeyStatus } from "../../src/rotation/key-status.js";
import type { RewrapReport } from "../../src/rotation/rewrap-job.js";
import {
  createRotationFixture,
  emptyDatabase,
  type RotationFixture,
  type SeededUser,
  unreadableSecrets,
} from "../integration/rotation/rotation-fixture.js";
import { POSTGRES_SKIP_REASON } from "../support/skip-reasons.js";
import { createTestDatabase, type TestDatabase } from "../support/test-database.js";

// Issue 17 item 4: `keybroker rewrap --workers 2` as an operator runs it, a process that forks two
// more, on a throwaway Postgres with the local keyring file. The workers share the target through
// the leased ranges and the rate through the database; the parent prints one JSON report.

const BIN = new URL("../../bin/keybroker.js", import.meta.url).pathname;
const missing = !process.env.TEST_DATABASE_URL;
// Enough rows, at a low enough total rate (40 a second: 4 s or more), that both workers, started
// at once, are both still finding rows when the slower of them is up.
const USERS = 160;
const APP = { provider: "github-oauth", clientId: "Iv1.workers01", secret: "gho-workers-client-secret-0123" };

interface CliRun {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

interface WorkersJson {
  readonly report: RewrapReport;
  readonly workers: ReadonlyArray<{
    readonly worker: number;
    readonly exitCode: number | null;
    readonly signal: string | null;
    readonly failed: boolean;
    readonly report?: RewrapReport;
  }>;
}

describe.skipIf(missing)(
  missing ? `keybroker rewrap --workers (${POSTGRES_SKIP_REASON})` : "keybroker rewrap --workers",
  () => {
    let dir: string;
    let keyringPath: string;
    let database: TestDatabase;
    let fixture: RotationFixture;
    let users: SeededUser[];
    let targetKeyId: string;

    const env = () => ({
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "",
      TZ: "UTC",
      LOG_LEVEL: "warn",
      DATABASE_URL: database.url ?? "",
      KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      KEYBROKER_KEYRING: "local",
      KEYBROKER_LOCAL_KEYRING_FILE: keyringPath,
    });

    function start(args: readonly string[]): { child: ChildProcess; done: Promise<CliRun> } {
      const child = spawn(process.execPath, [BIN, "rewrap", ...args], {
        env: env(),
        stdio: ["ignore", "pipe", "pipe"],
      });
      let stdout = "";
      let stderr = "";
      child.stdout?.on("data", (chunk: Buffer) => {
        stdout += chunk.toString();
      });
      child.stderr?.on("data", (chunk: Buffer) => {
        stderr += chunk.toString();
      });
      const done = new Promise<CliRun>((resolve) =>
        child.once("close", (code) => resolve({ code, stdout, stderr })),
      );
      return { child, done };
    }

    const parseJson = (run: CliRun): WorkersJson => {
      const line = run.stdout.trim().split("\n").at(-1) ?? "";
      try {
        return JSON.parse(line) as WorkersJson;
      } catch {
        throw new Error(`no JSON report on stdout:\n${run.stdout}\n--- stderr:\n${run.stderr.slice(-4_000)}`);
      }
    };

    const rangeRows = async () =>
      (
        await database.db
          .selectFrom("rewrap_ranges")
          .select(["owner", "done_at"])
          .where("target_key_id", "=", targetKeyId)
          .execute()
      ).map((r) => ({ owner: r.owner, done: r.done_at !== null }));

    /** Every secret opens with the keyring reloaded from the file, and every row is on the target. */
    async function expectAllOnTarget(): Promise<void> {
      const status = await readKeyStatus(database.db);
      expect(Object.fromEntries(status.users)).toEqual({ [targetKeyId]: USERS });
      expect(Object.fromEntries(status.oauthApps)).toEqual({ [targetKeyId]: 1 });
      expect(status.pepperKeyId).toBe(targetKeyId);
      const restarted = await fixture.pointAt(targetKeyId);
      expect(await unreadableSecrets(fixture.replica(restarted), users)).toEqual([]);
    }

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "keybroker-rewrap-workers-"));
      keyringPath = join(dir, "keyring.json");
      database = await createTestDatabase("postgres");
    });

    afterAll(async () => {
      await database?.close();
      await rm(dir, { recursive: true, force: true });
    });

    // Each test: USERS users and an OAuth app on the keyring file's current key, then a new
    // version (the target), as an operator rotating would.
    beforeEach(async () => {
      await emptyDatabase(database);
      await sql`truncate table rate_limit_leases`.execute(database.db);
      fixture = await createRotationFixture(database, "local", { localKeyringPath: keyringPath });
      users = await fixture.seedUsers(USERS);
      const apps = createOAuthAppStore({
        db: database.db,
        keyring: fixture.keyring,
        isOAuthProvider: () => true,
      });
      await apps.set(APP.provider, APP.clientId, Buffer.from(APP.secret));
      targetKeyId = await fixture.addMasterKey();
    }, 120_000);

    afterEach(async () => {
      await fixture?.close();
    });

    it("L288 two workers rewrap every user, the OAuth app and the pepper exactly once between them, and report as one", {
      timeout: 240_000,
    }, async () => {
      const run = await start(["--to", targetKeyId, "--workers", "2", "--rate", "40", "--json"]).done;

      expect(run.code, run.stderr.slice(-4_000)).toBe(0);
      const { report, workers } = parseJson(run);
      expect(workers.map((w) => [w.worker, w.exitCode, w.failed])).toEqual([
        [1, 0, false],
        [2, 0, false],
      ]);
      // Both took part, and each row was written once: a second write would be counted again.
      for (const w of workers) expect(w.report?.rewrapped).toBeGreaterThan(0);
      const rows = USERS + 2; // the users, the OAuth app and the pepper
      expect(report).toMatchObject({ rewrapped: rows, failed: 0, remaining: 0, stopped: false });
      expect((workers[0]?.report?.rewrapped ?? 0) + (workers[1]?.report?.rewrapped ?? 0)).toBe(rows);
      await expectAllOnTarget();
      // Finished: the target's ranges are gone (they only serve a resume).
      expect(await rangeRows()).toEqual([]);
    });

    it("L289 Ctrl-C to the parent stops both workers gracefully, and running the command again resumes to the end", {
      timeout: 300_000,
    }, async () => {
      const first = start(["--to", targetKeyId, "--workers", "2", "--rate", "20", "--json"]);
      // Wait until both workers hold ranges (two owners seen) and some rows have moved.
      const owners = new Set<string>();
      let moved = 0;
      const deadline = Date.now() + 180_000;
      while (Date.now() < deadline && (owners.size < 2 || moved < 10)) {
        for (const r of await rangeRows()) if (r.owner !== null) owners.add(r.owner);
        moved = (await readKeyStatus(database.db)).users.get(targetKeyId) ?? 0;
        await delay(50);
      }
      expect(owners.size).toBe(2);
      first.child.kill("SIGINT");
      const stopped = await first.done;

      expect(stopped.code, stopped.stderr.slice(-4_000)).toBe(130);
      expect(stopped.stderr).toContain("stopping: rows in flight finish in every worker");
      const halfway = parseJson(stopped);
      expect(halfway.workers.map((w) => [w.exitCode, w.failed, w.report?.stopped])).toEqual([
        [130, false, true],
        [130, false, true],
      ]);
      expect(halfway.report.stopped).toBe(true);
      expect(halfway.report.remaining).toBeGreaterThan(0);
      // Every range handed back (no lease left to wait out), and kept for the resume.
      const kept = await rangeRows();
      expect(kept.length).toBe(64);
      expect(kept.filter((r) => r.owner !== null)).toEqual([]);
      expect(kept.some((r) => r.done)).toBe(true);

      const second = await start(["--to", targetKeyId, "--workers", "2", "--json"]).done;

      expect(second.code, second.stderr.slice(-4_000)).toBe(0);
      const resumed = parseJson(second);
      expect(resumed.report).toMatchObject({ failed: 0, remaining: 0, stopped: false });
      // Nothing done twice: the rows moved by both runs add up to every row exactly.
      expect(halfway.report.rewrapped + resumed.report.rewrapped).toBe(USERS + 2);
      await expectAllOnTarget();
      expect(await rangeRows()).toEqual([]);
    });

    it("L289 a worker killed mid-run is reported as failed and the command exits 1, while the other finishes every row", {
      timeout: 300_000,
    }, async () => {
      const run = start(["--to", targetKeyId, "--workers", "2", "--rate", "20", "--json"]);
      // A range owner is named "pid <pid> <suffix>": kill the first worker seen holding one.
      let victim: number | undefined;
      const deadline = Date.now() + 180_000;
      while (victim === undefined && Date.now() < deadline) {
        const owner = (await rangeRows()).find((r) => r.owner !== null)?.owner;
        victim = owner === undefined || owner === null ? undefined : Number(/^pid (\d+) /.exec(owner)?.[1]);
        if (victim === undefined) await delay(50);
      }
      expect(victim).toBeGreaterThan(0);
      process.kill(victim ?? 0, "SIGKILL");
      const ended = await run.done;

      expect(ended.code, ended.stderr.slice(-4_000)).toBe(1);
      const { report, workers } = parseJson(ended);
      const killed = workers.find((w) => w.report === undefined);
      expect(killed).toMatchObject({ exitCode: null, failed: true });
      expect(workers.filter((w) => !w.failed)).toHaveLength(1);
      // Its range went to the other worker once the lease lapsed: nothing is left behind.
      expect(report).toMatchObject({ remaining: 0, failed: 0, stopped: false });
      await expectAllOnTarget();
    });

    it("L290 refuses --workers outside 1 to 16 with exit code 1 and says why", {
      timeout: 120_000,
    }, async () => {
      const run = await start(["--to", targetKeyId, "--workers", "17"]).done;

      expect(run.code).toBe(1);
      expect(run.stderr).toContain("keybroker rewrap: --workers must be an integer from 1 to 16");
      expect(run.stdout).toBe("");
      expect((await readKeyStatus(database.db)).users.get(targetKeyId)).toBeUndefined();
    });
  },
);
