import { execFile } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const BIN = new URL("../../bin/keybroker.js", import.meta.url).pathname;

/**
 * The real binary, for the cases that once did harm: `migrate --help` migrated, `dev --help` and
 * `serve --help` started a broker. Every other command's help is covered in-process
 * (test/unit/cli/cli-help.test.ts); these spawn because only a process shows it exits.
 */
describe("keybroker as a process: help and version", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-cli-process-"));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("K210 migrate --help, dev --help and serve -h print help and exit 0, starting and migrating nothing", async () => {
    const env = {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "",
      NODE_ENV: "development",
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_PGLITE_DIR: join(dir, "pgdata"),
      KEYBROKER_DEV_DIR: join(dir, "dev"),
    };
    const results = await Promise.all(
      [["migrate", "--help"], ["dev", "--help"], ["serve", "-h"], ["--version"]].map((argv) =>
        run(process.execPath, [BIN, ...argv], { env, timeout: 120_000 }),
      ),
    );

    expect(results[0]?.stdout).toMatch(/^Usage: keybroker migrate/);
    expect(results[1]?.stdout).toMatch(/^Usage: keybroker dev/);
    expect(results[2]?.stdout).toMatch(/^Usage: keybroker serve/);
    expect(results[3]?.stdout).toMatch(/^keybroker \d+\.\d+\.\d+ \(node /);
    for (const result of results) expect(result.stderr).toBe("");
    expect(await readdir(dir)).toEqual([]);
  }, 180_000);
});
