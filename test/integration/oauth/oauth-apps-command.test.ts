import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { PGlite } from "@electric-sql/pglite";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { CliIo } from "../../../src/cli/cli-io.js";
import { runOAuthApps } from "../../../src/cli/oauth-apps-command.js";
import { createLogger } from "../../../src/log/logger.js";
import { openDatabase } from "../../../src/store/database.js";
import { findLeaks } from "../../support/captured-logs.js";
import { oauthTestProvider } from "../../support/oauth-token-endpoint.js";
import { dumpAllRows } from "../../support/test-database.js";

// `keybroker oauth-apps` as an operator runs it, on a data directory and a local keyring.

describe("keybroker oauth-apps", () => {
  let dir: string;
  let env: Record<string, string>;
  const SECRET = `clientsecret${"9f".repeat(16)}`;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-oauth-apps-"));
    const template = await readFile(inject("pgliteTemplate"));
    const pglite = await PGlite.create({ dataDir: join(dir, "pglite"), loadDataDir: new Blob([template]) });
    await pglite.close();
    await writeFile(
      join(dir, "providers.json"),
      JSON.stringify({ providers: [oauthTestProvider("test-oauth", 9)] }),
    );
    env = {
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_PGLITE_DIR: join(dir, "pglite"),
      KEYBROKER_KEYRING: "local",
      KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      KEYBROKER_ALLOW_LOOPBACK_PROVIDERS: "1",
      KEYBROKER_LOCAL_KEYRING_FILE: join(dir, "keyring.json"),
      KEYBROKER_PROVIDERS_FILE: join(dir, "providers.json"),
      AUTH0_ISSUER: "https://tenant.example.auth0.com/",
      AUTH0_AUDIENCE: "keybroker",
      AUTH0_REQUIRED_PERMISSION: "use:secrets",
      LOG_LEVEL: "silent",
    };
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function run(args: string[], stdin?: string): Promise<{ code: number; out: string; err: string }> {
    const out: string[] = [];
    const err: string[] = [];
    const io: CliIo = {
      env,
      stdout: { write: (text: string) => out.push(text) },
      stderr: { write: (text: string) => err.push(text) },
      ...(stdin === undefined ? {} : { stdin: Readable.from([Buffer.from(stdin)]) }),
    };
    try {
      return { code: await runOAuthApps(args, io), out: out.join(""), err: err.join("") };
    } catch (e) {
      return { code: 1, out: out.join(""), err: `${err.join("")}${(e as Error).message}` };
    }
  }

  it("J178 refuses a client secret on argv, and sets, rotates and lists with the secret read from stdin, audited", async () => {
    const argv = await run(["set", "test-oauth", "--client-id", "cid", "--client-secret", SECRET]);
    expect(argv.code).toBe(1);
    expect(argv.err).toContain("never pass a client secret on the command line");
    expect(argv.err).not.toContain(SECRET);

    const set = await run(["set", "test-oauth", "--client-id", "cid-1"], `${SECRET}\n`);
    expect(set).toMatchObject({ code: 0 });
    expect(set.out).toContain("client-id=cid-1 version=1");
    const rotated = await run(["rotate", "test-oauth"], `${SECRET}x\n`);
    expect(rotated.out).toContain("client-id=cid-1 version=2");
    const listed = await run(["list"]);
    expect(listed.out).toMatch(/^test-oauth\tclient-id=cid-1\tversion=2\t/);
    expect((await run(["set", "github", "--client-id", "x"], "s\n")).code).toBe(1);
    expect((await run(["set", "test-oauth", "--client-id", "x"], "\n")).err).toContain("empty");

    const database = await openDatabase(
      { kind: "pglite", dataDir: join(dir, "pglite") },
      createLogger({ level: "silent" }),
    );
    try {
      const audit = await database.db
        .selectFrom("audit_events")
        .select(["action", "outcome", "target"])
        .execute();
      expect(audit.filter((r) => r.action.startsWith("oauth_app.") && r.outcome === "ok")).toEqual([
        { action: "oauth_app.set", outcome: "ok", target: "test-oauth" },
        { action: "oauth_app.rotate", outcome: "ok", target: "test-oauth" },
      ]);
      expect(findLeaks(await dumpAllRows(database.db), [SECRET, `${SECRET}x`])).toEqual([]);
    } finally {
      await database.close();
    }
    expect(findLeaks([set.out, rotated.out, listed.out].join(""), [SECRET])).toEqual([]);
    // Seven commands, each opening the data directory: generous under a loaded machine.
  }, 180_000);
});
