import { link, readFile, unlink, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { resolve } from "node:path";
import { BrokerError } from "../errors.js";

/** Held while a process has an embedded (PGlite) data directory open; `release` is idempotent. */
export interface DataDirLock {
  readonly path: string;
  release(): Promise<void>;
}

interface LockRecord {
  readonly pid: number;
  readonly holder: string;
  readonly host: string;
  readonly since: string;
}

/**
 * PGlite is one process's database: a second process opening the same directory corrupts it.
 * So whoever opens one (`keybroker dev`, an operator command) first takes `<dir>.lock`, a file
 * naming its pid. The file is written complete, then hard-linked into place (atomic, and EEXIST
 * when taken), so no one ever reads half a lock. A lock whose pid no longer runs on this host is
 * stale (a crash or SIGKILL) and is taken over.
 */
export async function lockDataDir(dataDir: string, holder: string): Promise<DataDirLock> {
  const path = `${resolve(dataDir)}.lock`;
  const mine: LockRecord = { pid: process.pid, holder, host: hostname(), since: new Date().toISOString() };
  for (let attempt = 0; attempt < 3; attempt += 1) {
    if (await tryCreate(path, mine)) return heldLock(path);
    const current = await readLock(path);
    if (current === "gone") continue;
    if (current !== "unreadable" && isRunningHere(current)) {
      throw new BrokerError(
        "failed_precondition",
        `${dataDir} is in use by ${current.holder} (pid ${current.pid}, since ${current.since}): ` +
          `stop it first. If no such process runs, delete ${path}`,
      );
    }
    // Stale: its process is gone. Remove it and try again (one of two racing takers wins the link).
    await unlink(path).catch(ignoreMissing);
  }
  throw new BrokerError(
    "failed_precondition",
    `could not take the lock ${path}: another process keeps taking it`,
  );
}

async function tryCreate(path: string, record: LockRecord): Promise<boolean> {
  const draft = `${path}.${process.pid}.${Date.now()}.tmp`;
  await writeFile(draft, `${JSON.stringify(record)}\n`, { mode: 0o600 });
  try {
    await link(draft, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "EEXIST") return false;
    throw err;
  } finally {
    await unlink(draft).catch(ignoreMissing);
  }
}

async function readLock(path: string): Promise<LockRecord | "gone" | "unreadable"> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "gone";
    throw err;
  }
  try {
    const parsed = JSON.parse(text) as Partial<LockRecord>;
    if (typeof parsed.pid !== "number" || !Number.isInteger(parsed.pid) || parsed.pid <= 0)
      return "unreadable";
    return {
      pid: parsed.pid,
      holder: String(parsed.holder ?? "a process"),
      host: String(parsed.host ?? ""),
      since: String(parsed.since ?? "?"),
    };
  } catch {
    return "unreadable";
  }
}

/** A lock from another host (a shared volume) cannot be checked: it counts as held. */
function isRunningHere(lock: LockRecord): boolean {
  if (lock.host !== "" && lock.host !== hostname()) return true;
  try {
    process.kill(lock.pid, 0);
    return true;
  } catch (err) {
    // EPERM: it runs, as another user.
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

function heldLock(path: string): DataDirLock {
  let released = false;
  return {
    path,
    async release() {
      if (released) return;
      released = true;
      const current = await readLock(path);
      // Only our own: a lock taken over as stale (we were presumed dead) belongs to someone else now.
      if (typeof current === "object" && current.pid === process.pid) await unlink(path).catch(ignoreMissing);
    },
  };
}

function ignoreMissing(err: unknown): void {
  if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
}
