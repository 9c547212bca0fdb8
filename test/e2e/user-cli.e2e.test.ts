import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDataKeyCache } from "../../src/keys/data-key-cache.js";
import { loadOrCreateLocalKeyring } from "../../src/keys/local-keyring.js";
import { loadOrCreatePepper } from "../../src/keys/pepper.js";
import { createUserDataKeys } from "../../src/keys/user-data-keys.js";
import { deriveFingerprintKey, deriveUserRef } from "../../src/keys/user-ref.js";
import { createLogger } from "../../src/log/logger.js";
import { parsePutSecret } from "../../src/secrets/secret-input.js";
import { createSecretService } from "../../src/secrets/secret-service.js";
import { type DatabaseHandle, openDatabase } from "../../src/store/database.js";
import { migrateToLatest } from "../../src/store/migrate.js";

const run = promisify(execFile);
const BIN = new URL("../../bin/keybroker.js", import.meta.url).pathname;
const ISSUER = "https://tenant.example.auth0.com/";
const SUB = "google-oauth2|user-cli-canary";
const VALUE = "ghp_user_cli_canary_value_000000000";

/** `keybroker user rotate-key` and `user shred`, as processes on an embedded database directory. */
describe("keybroker user commands", () => {
  let dir: string;
  let secretId: string;
  const env = () => ({
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "",
    KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
    KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
    LOG_LEVEL: "warn",
    KEYBROKER_PGLITE_DIR: join(dir, "pgdata"),
    KEYBROKER_KEYRING: "local",
    KEYBROKER_LOCAL_KEYRING_FILE: join(dir, "keyring.json"),
    AUTH0_ISSUER: ISSUER,
    AUTH0_AUDIENCE: "https://keybroker.test/api",
    AUTH0_REQUIRED_PERMISSION: "keybroker:use",
  });

  /** The broker's own domain code on the same directory and keyring (the CLI must be closed). */
  async function withSecrets<T>(
    fn: (db: DatabaseHandle, secrets: ReturnType<typeof createSecretService>, userRef: Buffer) => Promise<T>,
  ) {
    const database = await openDatabase(
      { kind: "pglite", dataDir: join(dir, "pgdata") },
      createLogger({ level: "silent" }),
    );
    try {
      await migrateToLatest(database.db);
      const keyring = await loadOrCreateLocalKeyring({
        path: join(dir, "keyring.json"),
        nodeEnv: "development",
      });
      const pepper = await loadOrCreatePepper(database.db, keyring);
      const secrets = createSecretService({
        db: database.db,
        prepared: database.prepared,
        userDataKeys: createUserDataKeys({
          keyring,
          cache: createDataKeyCache({ maxAgeMs: 60_000, maxUses: 100, maxEntries: 10 }),
        }),
        fingerprintKey: deriveFingerprintKey(pepper),
      });
      return await fn(database, secrets, deriveUserRef(pepper, ISSUER, SUB));
    } finally {
      await database.close();
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-user-cli-"));
    secretId = await withSecrets(async (_db, secrets, userRef) => {
      const user = { userRef, expiresAt: Math.floor(Date.now() / 1000) + 600 };
      const put = parsePutSecret({
        secretId: "",
        provider: "github",
        label: "cli",
        fields: { token: VALUE },
      });
      return (await secrets.put(user, put, AbortSignal.timeout(10_000))).id;
    });
  }, 180_000);

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // A spawned command and two PGlite reopens each: minutes on a loaded machine.
  it("rotates one user's data key: every secret is re-sealed and still opens, under a new wrapped key", {
    timeout: 240_000,
  }, async () => {
    const before = await withSecrets(async (db, _s, userRef) =>
      db.db
        .selectFrom("users")
        .select(["wrapped_data_key", "data_key_version"])
        .where("user_ref", "=", userRef)
        .executeTakeFirstOrThrow(),
    );
    const { stdout } = await run(process.execPath, [BIN, "user", "rotate-key", "--sub", SUB], { env: env() });
    expect(stdout).toContain("version 2, 1 secret version(s) re-sealed");
    expect(stdout).not.toContain(SUB);
    await withSecrets(async (db, secrets, userRef) => {
      const after = await db.db
        .selectFrom("users")
        .select(["wrapped_data_key", "data_key_version"])
        .where("user_ref", "=", userRef)
        .executeTakeFirstOrThrow();
      expect(after.data_key_version).toBe(before.data_key_version + 1);
      expect(Buffer.from(after.wrapped_data_key).equals(Buffer.from(before.wrapped_data_key))).toBe(false);
      const opened = await secrets.open({ userRef, expiresAt: 0 }, secretId, AbortSignal.timeout(10_000));
      expect(opened.fields.get("token")?.toString()).toBe(VALUE);
    });
  });

  it("refuses to shred without --yes, then shreds for good", { timeout: 240_000 }, async () => {
    const refused = await run(process.execPath, [BIN, "user", "shred", "--sub", SUB], { env: env() }).then(
      () => undefined,
      (err: { code?: number; stderr?: string }) => err,
    );
    expect(refused?.code).toBe(1);
    expect(refused?.stderr).toContain("irreversible");
    const { stdout } = await run(process.execPath, [BIN, "user", "shred", "--sub", SUB, "--yes"], {
      env: env(),
    });
    expect(stdout).toContain("1 secret(s) destroyed");
    await withSecrets(async (db, secrets, userRef) => {
      const err = await secrets.open({ userRef, expiresAt: 0 }, secretId, AbortSignal.timeout(10_000)).then(
        () => undefined,
        (e: { code?: string }) => e,
      );
      expect(err?.code).toBe("not_found");
      const actions = await db.db
        .selectFrom("audit_events")
        .select(["action", "outcome"])
        .orderBy("seq")
        .execute();
      expect(actions.map((a) => `${a.action}:${a.outcome}`)).toEqual([
        "rewrap.step:started",
        "rewrap.step:ok",
        "user.shred:started",
        "user.shred:ok",
      ]);
    });
  });
});
