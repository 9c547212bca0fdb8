import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { COMMANDS, runCli } from "../../../src/cli/run-cli.js";
import { keybrokerVersion } from "../../../src/cli/version.js";
import { captureCliIo } from "../../support/cli-io.js";

/**
 * Every command, in-process (a spawn per case would take minutes; test/e2e/cli-process.e2e.test.ts
 * spawns the real binary for a few). The environment would let each command do real work —
 * migrate an embedded database, start a dev broker — so "nothing happened" is checked on disk.
 */
describe("keybroker --help and -h, on every command", () => {
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-cli-help-"));
    env = {
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_PGLITE_DIR: join(dir, "pgdata"),
      KEYBROKER_DEV_DIR: join(dir, "dev"),
      KEYBROKER_DEV_ISSUER_PORT: "0",
      KEYBROKER_GRPC_PORT: "0",
      KEYBROKER_KEYRING: "local",
      KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      KEYBROKER_LOCAL_KEYRING_FILE: join(dir, "keyring.json"),
      LOG_LEVEL: "silent",
    };
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  // Each command, each of its actions, and the flag before, after and among other arguments.
  const cases = COMMANDS.flatMap((command) => {
    const forms = [[command.name], ...command.subcommands.map((sub) => [command.name, sub])];
    return forms.flatMap((form) => [
      [...form, "--help"],
      [...form, "-h"],
      [command.name, "-h", ...form.slice(1)],
      [...form, "--json", "--to", "local:1", "--help", "--name", "x"],
    ]);
  });

  it.each(cases.map((argv) => [argv.join(" "), argv]))(
    "K210 `keybroker %s` prints the command's help to stdout, exits 0 and runs nothing",
    async (_title, argv) => {
      const io = captureCliIo(env);

      const code = await runCli(argv as string[], io);

      const command = COMMANDS.find((c) => c.name === (argv as string[])[0]);
      expect(code).toBe(0);
      expect(io.out()).toBe(command?.help);
      expect(io.err()).toBe("");
      // No database, dev directory, lock or keyring file was created.
      expect(await readdir(dir)).toEqual([]);
    },
  );

  it("K210 help texts name their command, end with a newline, and list --help", () => {
    for (const command of COMMANDS) {
      expect(command.help).toMatch(new RegExp(`^Usage: keybroker ${command.name}\\b`));
      expect(command.help.endsWith("\n")).toBe(true);
      expect(command.help).toContain("-h, --help");
    }
  });

  it("K210 -h, --help and help list every command on stdout; help <command> is that command's help", async () => {
    for (const argv of [["--help"], ["-h"], ["help"]]) {
      const io = captureCliIo(env);
      expect(await runCli(argv, io)).toBe(0);
      for (const command of COMMANDS) expect(io.out()).toContain(`  ${command.name} `);
    }
    const io = captureCliIo(env);
    expect(await runCli(["help", "rewrap"], io)).toBe(0);
    expect(io.out()).toBe(COMMANDS.find((c) => c.name === "rewrap")?.help);
  });

  it("prints the version with --version, -v and version, and as JSON with --json", async () => {
    for (const flag of ["--version", "-v", "version"]) {
      const io = captureCliIo(env);
      expect(await runCli([flag], io)).toBe(0);
      expect(io.out()).toBe(`keybroker ${keybrokerVersion()} (node ${process.versions.node})\n`);
    }
    const io = captureCliIo(env);
    expect(await runCli(["--version", "--json"], io)).toBe(0);
    expect(JSON.parse(io.out())).toEqual({ version: keybrokerVersion(), node: process.versions.node });
    expect(keybrokerVersion()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("K211 refuses an unknown command, flag or stray argument with exit 2 before anything runs", async () => {
    for (const argv of [
      ["nosuch"],
      ["migrate", "--dryrun"],
      ["rewrap", "--to", "local:1", "--dryrun"],
      ["caller-keys", "list", "extra"],
      ["caller-keys", "delete", "ck_1"],
      ["keys", "statuses"],
      ["dev", "--port", "1"],
      ["serve", "now"],
      ["completion", "fish"],
    ]) {
      const io = captureCliIo(env);
      expect(await runCli(argv, io), argv.join(" ")).toBe(2);
      expect(io.out(), argv.join(" ")).toBe("");
      expect(io.err(), argv.join(" ")).toMatch(/keybroker|Usage/);
    }
    expect(await readdir(dir)).toEqual([]);
  });

  it("prints the usage to stderr and exits 2 with no command at all", async () => {
    const io = captureCliIo(env);
    expect(await runCli([], io)).toBe(2);
    expect(io.err()).toContain("Usage: keybroker <command>");
  });
});
