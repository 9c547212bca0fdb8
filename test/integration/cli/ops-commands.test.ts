import { mkdir, mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { afterAll, beforeAll, describe, expect, inject, it, vi } from "vitest";
import { runCli } from "../../../src/cli/run-cli.js";
import { captureCliIo } from "../../support/cli-io.js";
import { type LocalKmsServer, startLocalKmsServer } from "../../support/local-kms-server.js";

/** A migrated PGlite data directory, from the suite's template (a cold start costs seconds). */
async function migratedDataDir(path: string): Promise<void> {
  const template = await readFile(inject("pgliteTemplate"));
  const pglite = await PGlite.create({ dataDir: path, loadDataDir: new Blob([template]) });
  await pglite.close();
}

/** Operator commands in-process, on an embedded data directory named explicitly, or the dev one. */
// Each command reopens the PGlite directory (about a second, several under load).
describe("operator commands: the database they work on, and --json", { timeout: 180_000 }, () => {
  let dir: string;
  let env: Record<string, string>;
  const cli = async (argv: string[], extraEnv: Record<string, string | undefined> = {}) => {
    const io = captureCliIo({ ...env, ...extraEnv });
    const code = await runCli(argv, io);
    return { code, out: io.out(), err: io.err() };
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-ops-commands-"));
    await migratedDataDir(join(dir, "pgdata"));
    env = {
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_PGLITE_DIR: join(dir, "pgdata"),
      LOG_LEVEL: "silent",
    };
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    [["migrate"]],
    [["caller-keys", "create", "--name", "x", "--scopes", "secrets:read"]],
    [["caller-keys", "list"]],
    [["keys", "status"]],
    [["audit", "verify"]],
    [["user", "rotate-key", "--user-ref", "a".repeat(64)]],
    [["rewrap", "--to", "local:1", "--dry-run"]],
  ])(
    "K212 `%s` refuses an in-memory database: exit 1, KEYBROKER_PGLITE_DIR named, nothing done",
    async (argv) => {
      const result = await cli(argv, {
        KEYBROKER_PGLITE_DIR: undefined,
        KEYBROKER_KEYRING: "local",
        KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
        KEYBROKER_LOCAL_KEYRING_FILE: join(dir, "unused-keyring.json"),
      });

      expect(result.code).toBe(1);
      expect(result.out).toBe("");
      expect(result.err).toContain("KEYBROKER_PGLITE_DIR: required for an operator command");
      expect(await readdir(dir)).toEqual(["pgdata"]);
    },
  );

  it("reports a migrated database as up to date, as JSON too", async () => {
    expect(await cli(["migrate"])).toMatchObject({ code: 0, out: "database is up to date\n" });
    const json = await cli(["migrate", "--json"]);
    expect(JSON.parse(json.out)).toEqual({ applied: [], runtimeRoleGranted: null });
  });

  it("K215 caller-keys --json: create shows the key once; list, revoke and keys status carry no key or hash", async () => {
    const created = await cli([
      "caller-keys",
      "create",
      "--name",
      "json-app",
      "--scopes",
      "secrets:read,proxy:call",
      "--expires-in-days",
      "30",
      "--json",
    ]);
    expect(created.code).toBe(0);
    const key = JSON.parse(created.out) as { key: string; id: string; expiresAt: string; last4: string };
    expect(key.key).toMatch(/^kbk_\w{38}$/);
    expect(key.last4).toBe(key.key.slice(-4));

    const list = await cli(["caller-keys", "list", "--json"]);
    const listed = (JSON.parse(list.out) as Array<Record<string, unknown>>).find((k) => k.id === key.id);
    expect(listed).toMatchObject({
      name: "json-app",
      state: "active",
      expiresAt: key.expiresAt,
      lastUsedAt: null,
      scopes: ["secrets:read", "proxy:call"],
    });
    expect(Object.keys(listed ?? {})).not.toContain("key");
    expect(list.out).not.toContain(key.key);
    expect(list.out).not.toMatch(/hash/i);

    const text = await cli(["caller-keys", "list"]);
    expect(text.out).toMatch(
      new RegExp(`${key.id}\\tjson-app\\t.*\\tactive\\texpires ${key.expiresAt}\\tlast used never\\t`),
    );

    const revoked = await cli(["caller-keys", "revoke", key.id, "--json"]);
    expect(JSON.parse(revoked.out)).toEqual({ id: key.id, revoked: true });
    const status = await cli(["keys", "status", "--json"]);
    expect(JSON.parse(status.out)).toEqual({ keys: [] });
    for (const output of [revoked.out, status.out]) expect(output).not.toContain(key.key);
  });

  it("audit verify and query --json answer one JSON document each", async () => {
    const verify = await cli(["audit", "verify", "--json"]);
    expect(verify.code).toBe(0);
    expect(JSON.parse(verify.out)).toMatchObject({ ok: true, chain: { ok: true }, checkpoint: null });
    const query = await cli(["audit", "query", "--json", "--limit", "5"]);
    expect(Array.isArray(JSON.parse(query.out))).toBe(true);
  });

  it("K221 --dev works on the dev broker's directory, and refuses production and DATABASE_URL", async () => {
    const devDir = join(dir, "dev");
    await mkdir(devDir);
    await migratedDataDir(join(devDir, "pgdata"));
    const dev = {
      KEYBROKER_DEV_DIR: devDir,
      KEYBROKER_PGLITE_DIR: undefined,
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: undefined,
    };

    const listed = await cli(["caller-keys", "list", "--dev", "--json"], dev);
    expect(listed).toMatchObject({ code: 0, out: "[]\n" });

    const production = await cli(["caller-keys", "list", "--dev"], { ...dev, NODE_ENV: "production" });
    expect(production.code).toBe(1);
    expect(production.err).toContain("development-only");
    const mixed = await cli(["caller-keys", "list", "--dev"], { ...dev, DATABASE_URL: "postgres://u@h/db" });
    expect(mixed.code).toBe(2);
    expect(mixed.err).toContain("unset DATABASE_URL, or drop --dev");
    const missing = await cli(["keys", "status", "--dev"], { KEYBROKER_DEV_DIR: join(dir, "nowhere") });
    expect(missing.code).toBe(1);
    expect(missing.err).toContain("run keybroker dev once first");
  });
});

describe("keybroker rewrap against the local KMS-protocol server", { timeout: 120_000 }, () => {
  let dir: string;
  let kms: LocalKmsServer;
  let env: Record<string, string>;
  let target: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-rewrap-target-"));
    await migratedDataDir(join(dir, "pgdata"));
    kms = await startLocalKmsServer();
    const current = kms.createKey("current");
    target = kms.createKey("target");
    kms.createAlias("alias/keybroker-next", target);
    // Read by the AWS SDK's default credential chain, as in a deployment.
    vi.stubEnv("AWS_ACCESS_KEY_ID", "test");
    vi.stubEnv("AWS_SECRET_ACCESS_KEY", "test");
    // No AUTH0_* at all: rewrap needs the database and the keyring only.
    env = {
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_PGLITE_DIR: join(dir, "pgdata"),
      KEYBROKER_KEYRING: "aws-kms",
      KEYBROKER_KMS_KEY_ID: current,
      KEYBROKER_KMS_ENDPOINT: kms.endpoint,
      KEYBROKER_KMS_MAX_ATTEMPTS: "1",
      AWS_REGION: kms.region,
      LOG_LEVEL: "silent",
    };
  });

  afterAll(async () => {
    vi.unstubAllEnvs();
    await kms.close();
    await rm(dir, { recursive: true, force: true });
  });

  const rewrap = async (...args: string[]) => {
    const io = captureCliIo(env);
    const code = await runCli(["rewrap", ...args], io);
    return { code, out: io.out(), err: io.err() };
  };

  it("K220 --dry-run with an existing target passes without any AUTH0_* variable", async () => {
    const result = await rewrap("--to", "alias/keybroker-next", "--dry-run");

    expect(result.code).toBe(0);
    expect(result.out).toContain(`target master key: ${target}`);
    expect(result.out).toContain("nothing was written");
  });

  it("K220 --dry-run refuses a target key that does not exist, naming it", async () => {
    const result = await rewrap("--to", "alias/no-such-key", "--dry-run", "--json");

    expect(result.code).toBe(1);
    expect(result.out).toBe("");
    expect(result.err).toContain("master key alias/no-such-key does not exist");
  });

  it("K220 --dry-run refuses a disabled target", async () => {
    kms.disableKey(target);
    try {
      const result = await rewrap("--to", target, "--dry-run");
      expect(result.code).toBe(1);
      expect(result.err).toContain("cannot wrap data keys (state Disabled)");
    } finally {
      kms.enableKey(target);
    }
  });

  it("K220 with the local keyring, refuses a key version the keyring file does not hold", async () => {
    const io = captureCliIo({
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_PGLITE_DIR: join(dir, "pgdata"),
      KEYBROKER_KEYRING: "local",
      KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      KEYBROKER_LOCAL_KEYRING_FILE: join(dir, "keyring.json"),
      LOG_LEVEL: "silent",
    });
    expect(await runCli(["rewrap", "--to", "local:9", "--dry-run"], io)).toBe(1);
    expect(io.err()).toContain("master key local:9 does not exist in the local keyring");
  });
});
