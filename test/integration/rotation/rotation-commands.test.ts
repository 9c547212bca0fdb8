import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { afterAll, beforeAll, expect, inject, it } from "vitest";
import { runKeys } from "../../../src/cli/keys-command.js";
import { type CommandIo, runRewrap } from "../../../src/cli/rewrap-command.js";
import type { Keyring } from "../../../src/keys/keyring.js";
import { createOAuthAppStore, type OAuthAppStore } from "../../../src/oauth/oauth-app-store.js";
import { type DatabaseHandle, openDatabase } from "../../../src/store/database.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";
import {
  createRotationFixture,
  emptyDatabase,
  type SeededUser,
  silentLogger,
  unreadableSecrets,
} from "./rotation-fixture.js";

const USERS = 5;
const APP = { provider: "github-oauth", clientId: "Iv1.cli0123", secret: "gho-cli-client-secret-0123456789" };

const appStore = (database: DatabaseHandle, keyring: Keyring): OAuthAppStore =>
  createOAuthAppStore({ db: database.db, keyring, isOAuthProvider: () => true });

function captureIo(env: Record<string, string>): CommandIo & { out(): string; err(): string } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    env,
    stdout: { write: (text: string) => out.push(text) },
    stderr: { write: (text: string) => err.push(text) },
    out: () => out.join(""),
    err: () => err.join(""),
  };
}

// The operator commands read the broker's own configuration: the local keyring file and a
// database (a PGlite directory, or the Postgres test database), as a deployment would.
describeOnEachDatabase("keybroker rewrap and keys status on %s", (databaseKind) => {
  let dir: string;
  let keyringPath: string;
  let postgres: TestDatabase | undefined;
  let env: Record<string, string>;
  let users: SeededUser[];

  /** Runs `use` on the database; PGlite is closed again after, so a command can open it. */
  async function withDatabase<T>(use: (database: DatabaseHandle) => Promise<T>): Promise<T> {
    if (postgres !== undefined) return use(postgres);
    const database = await openDatabase({ kind: "pglite", dataDir: join(dir, "pglite") }, silentLogger);
    try {
      return await use(database);
    } finally {
      await database.close();
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-rotation-cli-"));
    keyringPath = join(dir, "keyring.json");
    const common = {
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      LOG_LEVEL: "silent",
      KEYBROKER_KEYRING: "local",
      KEYBROKER_LOCAL_KEYRING_FILE: keyringPath,
      AUTH0_ISSUER: "https://tenant.example.auth0.com/",
      AUTH0_AUDIENCE: "keybroker",
      AUTH0_REQUIRED_PERMISSION: "use:secrets",
    };
    if (databaseKind === "postgres") {
      postgres = await createTestDatabase("postgres");
      env = { ...common, DATABASE_URL: postgres.url ?? "" };
    } else {
      // A migrated data directory, loaded from the suite's template.
      const template = await readFile(inject("pgliteTemplate"));
      const pglite = await PGlite.create({ dataDir: join(dir, "pglite"), loadDataDir: new Blob([template]) });
      await pglite.close();
      env = { ...common, KEYBROKER_PGLITE_DIR: join(dir, "pglite") };
    }
    // Five users and an OAuth app on local:1; then local:2 is added (current), as an operator rotating would.
    users = await withDatabase(async (database) => {
      await emptyDatabase(database);
      const fixture = await createRotationFixture(database, "local", { localKeyringPath: keyringPath });
      try {
        const seeded = await fixture.seedUsers(USERS);
        await appStore(database, fixture.keyring).set(APP.provider, APP.clientId, Buffer.from(APP.secret));
        await fixture.addMasterKey();
        return seeded;
      } finally {
        await fixture.close();
      }
    });
  });

  afterAll(async () => {
    await postgres?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("keys status counts the users, the OAuth apps and the pepper on each master key", async () => {
    const io = captureIo(env);

    expect(await runKeys(["status"], io)).toBe(0);

    expect(io.out()).toMatch(/^local:1 +5 +1 +yes$/m);
    expect(io.out()).toMatch(/^total +5 +1$/m);
  });

  it("keys status marks a key outside KEYBROKER_ACCEPTED_MASTER_KEYS as retired", async () => {
    const io = captureIo({ ...env, KEYBROKER_ACCEPTED_MASTER_KEYS: "local:2" });

    expect(await runKeys(["status"], io)).toBe(0);

    expect(io.out()).toMatch(/^local:1 +5 +1 +yes +RETIRED$/m);
    expect(io.out()).toContain("run rewrap");
  });

  it("prints the plan on --dry-run and writes nothing", async () => {
    const io = captureIo(env);

    expect(await runRewrap(["--to", "local:2", "--dry-run"], io)).toBe(0);

    expect(io.out()).toContain("target master key: local:2");
    expect(io.out()).toContain("to rewrap: 5 user data key(s), 1 OAuth app(s) and the pepper");
    expect(io.out()).toContain("  from local:1: 5 user(s)");
    expect(io.out()).toContain("nothing was written");
    const status = captureIo(env);
    await runKeys(["status"], status);
    expect(status.out()).toMatch(/^local:1 +5 +1 +yes$/m);
  });

  it("refuses a target that is not a local key id, a bad rate and a missing --to", async () => {
    const io = captureIo(env);

    await expect(runRewrap(["--to", "alias/keybroker"], io)).rejects.toMatchObject({
      code: "invalid_argument",
    });
    await expect(runRewrap(["--to", "local:2", "--rate", "0"], io)).rejects.toMatchObject({
      code: "invalid_argument",
    });
    expect(await runRewrap([], io)).toBe(2);
    expect(io.err()).toContain("usage: keybroker rewrap --to");
  });

  it("L290 refuses --workers outside 1 to 16, and more than one worker on the embedded database; a dry run with workers runs once", async () => {
    for (const workers of ["0", "17", "two", "1.5"]) {
      await expect(runRewrap(["--to", "local:2", "--workers", workers], captureIo(env))).rejects.toThrow(
        "--workers must be an integer from 1 to 16",
      );
    }
    const io = captureIo(env);
    const dryRun = runRewrap(["--to", "local:2", "--workers", "2", "--dry-run"], io);
    if (databaseKind === "pglite") {
      await expect(dryRun).rejects.toThrow("--workers above 1 needs Postgres (DATABASE_URL)");
      return;
    }
    expect(await dryRun).toBe(0);
    expect(io.out()).toContain("to rewrap: 5 user data key(s), 1 OAuth app(s) and the pepper");
    expect(io.out()).not.toContain("worker processes");
    expect(io.out()).toContain("nothing was written");
  });

  // Last: the only test that changes the stored rows.
  it("rewraps every row to the new key, reports it, and every secret stays readable", async () => {
    const io = captureIo(env);

    const code = await runRewrap(["--to", "local:2", "--concurrency", "2", "--rate", "100"], io);

    expect(io.err()).toBe("");
    expect(code).toBe(0);
    expect(io.out()).toMatch(/rewrap finished in [0-9.]+ s: 7 rewrapped, 0 skipped, 0 failed, 0 remaining/);
    const status = captureIo(env);
    await runKeys(["status"], status);
    expect(status.out()).toMatch(/^local:2 +5 +1 +yes$/m);
    expect(status.out()).not.toContain("local:1");
    await withDatabase(async (database) => {
      const fixture = await createRotationFixture(database, "local", { localKeyringPath: keyringPath });
      try {
        await fixture.disableMasterKey("local:1");
        expect(await unreadableSecrets(fixture.replica(), users)).toEqual([]);
        const app = await appStore(database, fixture.keyring).get(APP.provider);
        expect(app.clientSecret.toString("utf8")).toBe(APP.secret);
        app.clientSecret.fill(0);
      } finally {
        await fixture.close();
      }
    });
  });
});
