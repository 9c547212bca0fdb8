import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { lockDataDir } from "../../../src/cli/data-dir-lock.js";

/** A pid that ran and is gone (a crashed broker's). */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ["-e", ""], { stdio: "ignore" });
  await new Promise((resolve) => child.on("exit", resolve));
  return child.pid ?? 0;
}

describe("the embedded data directory lock", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-lock-"));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("K214 refuses a second holder while the first runs, naming it and its pid; released, it is free again", async () => {
    const data = join(dir, "held");
    const first = await lockDataDir(data, "keybroker dev");
    expect(JSON.parse(await readFile(`${data}.lock`, "utf8"))).toMatchObject({
      pid: process.pid,
      holder: "keybroker dev",
    });

    await expect(lockDataDir(data, "keybroker caller-keys")).rejects.toMatchObject({
      code: "failed_precondition",
      message: expect.stringContaining(`in use by keybroker dev (pid ${process.pid}`),
    });

    await first.release();
    const second = await lockDataDir(data, "keybroker caller-keys");
    await second.release();
    await first.release(); // twice: harmless
  });

  it("K214 refuses while another live process holds it", async () => {
    const data = join(dir, "other");
    const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 60000)"], { stdio: "ignore" });
    try {
      await writeFile(
        `${data}.lock`,
        JSON.stringify({ pid: child.pid, holder: "keybroker dev", host: hostname(), since: "then" }),
      );
      await expect(lockDataDir(data, "keybroker migrate")).rejects.toThrow(`pid ${child.pid}`);
    } finally {
      child.kill();
    }
  });

  it("K214 takes over a stale lock whose process is gone, and an unreadable one", async () => {
    const data = join(dir, "stale");
    await writeFile(
      `${data}.lock`,
      JSON.stringify({ pid: await deadPid(), holder: "keybroker dev", host: hostname(), since: "then" }),
    );
    const taken = await lockDataDir(data, "keybroker dev");
    expect(JSON.parse(await readFile(`${data}.lock`, "utf8")).pid).toBe(process.pid);
    await taken.release();

    await writeFile(`${data}.lock`, "{half a lo");
    const again = await lockDataDir(data, "keybroker dev");
    await again.release();
  });

  it("does not remove a lock someone else took over", async () => {
    const data = join(dir, "taken-over");
    const mine = await lockDataDir(data, "keybroker dev");
    const theirs = JSON.stringify({ pid: process.pid + 1, holder: "x", host: hostname(), since: "now" });
    await writeFile(`${data}.lock`, theirs);
    await mine.release();
    expect(await readFile(`${data}.lock`, "utf8")).toBe(theirs);
  });
});
