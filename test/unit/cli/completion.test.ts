import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { COMMANDS, runCli } from "../../../src/cli/run-cli.js";
import { captureCliIo } from "../../support/cli-io.js";

const run = promisify(execFile);

async function script(shell: "bash" | "zsh"): Promise<string> {
  const io = captureCliIo({});
  expect(await runCli(["completion", shell], io)).toBe(0);
  return io.out();
}

/** What bash would offer after the words typed so far (the script sourced into a real bash). */
async function bashOffers(completion: string, words: string[]): Promise<string[]> {
  const program =
    `${completion}\n` +
    `COMP_WORDS=(${words.map((w) => `'${w}'`).join(" ")}); COMP_CWORD=${words.length - 1}\n` +
    `_keybroker; printf '%s\\n' "\${COMPREPLY[@]}"`;
  const { stdout } = await run("bash", ["--norc", "--noprofile", "-c", program]);
  return stdout.split("\n").filter((line) => line !== "");
}

describe("keybroker completion", () => {
  it("completes commands, then a command's actions, then its flags, in bash", async () => {
    const bash = await script("bash");

    expect(await bashOffers(bash, ["keybroker", ""])).toEqual(
      expect.arrayContaining([...COMMANDS.map((c) => c.name), "--help", "--version"]),
    );
    expect(await bashOffers(bash, ["keybroker", "cal"])).toEqual(["caller-keys"]);
    expect(await bashOffers(bash, ["keybroker", "caller-keys", ""])).toEqual([
      "create",
      "list",
      "revoke",
      "rotate",
      "reinstate",
    ]);
    expect(await bashOffers(bash, ["keybroker", "caller-keys", "list", "--j"])).toEqual(["--json"]);
    expect(await bashOffers(bash, ["keybroker", "rewrap", "--dr"])).toEqual(["--dry-run"]);
    expect(await bashOffers(bash, ["keybroker", "completion", ""])).toEqual(["bash", "zsh"]);
  });

  it("gives zsh every command with its summary, and every action and flag", async () => {
    const zsh = await script("zsh");

    expect(zsh.startsWith("#compdef keybroker\n")).toBe(true);
    for (const command of COMMANDS) {
      expect(zsh).toContain(`'${command.name}:`);
      for (const word of [...command.subcommands, ...command.flags]) expect(zsh).toContain(` ${word}`);
    }
    // Balanced quotes: a summary with a quote would end the entry early.
    expect((zsh.match(/'/g) ?? []).length % 2).toBe(0);
  });

  it("names the shells it knows when given another", async () => {
    const io = captureCliIo({});
    expect(await runCli(["completion", "fish"], io)).toBe(2);
    expect(io.err()).toContain("unknown shell: fish");
  });
});
