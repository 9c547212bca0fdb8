import { execFile, spawnSync } from "node:child_process";
import { chownSync, existsSync, readdirSync } from "node:fs";
import { appendFile, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { delimiter, join } from "node:path";
import pg from "pg";
import { createThrowawayDatabase } from "./throwaway-database.js";

/**
 * A PostgreSQL cluster a test owns outright: its own data directory, port and process, so the
 * test can stop, restart and kill it without touching any shared server. Fault tests need
 * that; a shared TEST_DATABASE_URL server cannot be stopped under other suites' feet.
 *
 * Postgres refuses to run as root: as root, every binary runs as the `postgres` OS user
 * (runuser); as anyone else, as the current user. Binaries come from PG_BIN, else the
 * newest /usr/lib/postgresql/<version>/bin (Debian, Ubuntu), else PATH.
 */
export interface OwnedPostgres {
  readonly port: number;
  readonly dataDir: string;
  /** Superuser URL of a database on this cluster (default "postgres"); trust auth, 127.0.0.1. */
  url(database?: string): string;
  /** Creates a fresh, empty database and returns its URL. */
  createDatabase(prefix?: string): Promise<string>;
  /** `pg_ctl stop`: "fast" rolls back open transactions and disconnects; "immediate" is a crash. */
  stop(mode?: "fast" | "immediate"): Promise<void>;
  start(): Promise<void>;
  restart(mode?: "fast" | "immediate"): Promise<void>;
  /** pg_terminate_backend() of every other client backend; returns how many were terminated. */
  terminateBackends(database?: string): Promise<number>;
  /** Client backends currently connected to `database` (or all databases). */
  clientBackends(database?: string): Promise<number>;
  /** The server log so far (for a failing test's message). */
  serverLog(): Promise<string>;
  /** Stops the server (immediately) and deletes the data directory. Idempotent. */
  destroy(): Promise<void>;
}

export interface OwnedPostgresOptions {
  /** Extra postgresql.conf lines, e.g. ["max_connections = 20"]. */
  readonly settings?: readonly string[];
}

const COMMAND_TIMEOUT_MS = 60_000;
const PG_CTL_WAIT_SEC = 30;
const SUPERUSER = "postgres";

/** Where initdb, pg_ctl and postgres live; throws a message saying what to install. */
export function findPostgresBinaries(): string {
  const candidates: string[] = [];
  if (process.env.PG_BIN !== undefined) candidates.push(process.env.PG_BIN);
  const debian = "/usr/lib/postgresql";
  if (existsSync(debian)) {
    const versions = readdirSync(debian)
      .filter((v) => /^\d+$/.test(v))
      .sort((a, b) => Number(b) - Number(a));
    candidates.push(...versions.map((v) => join(debian, v, "bin")));
  }
  candidates.push(...(process.env.PATH ?? "").split(delimiter).filter((p) => p !== ""));
  const found = candidates.find((dir) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "pg_ctl")));
  if (found === undefined) {
    throw new Error(
      "owned-postgres: initdb and pg_ctl were not found (looked in PG_BIN, /usr/lib/postgresql/*/bin " +
        "and PATH). Install the PostgreSQL server (Debian/Ubuntu: apt-get install postgresql) or set " +
        "PG_BIN to the directory holding initdb.",
    );
  }
  return found;
}

/** Starts a new cluster: initdb into a temp dir, trust auth, 127.0.0.1 only, a free port. */
export async function startOwnedPostgres(options: OwnedPostgresOptions = {}): Promise<OwnedPostgres> {
  const bin = findPostgresBinaries();
  const asRoot = process.getuid?.() === 0;
  const dir = await mkdtemp(join(tmpdir(), "keybroker-owned-pg-"));
  const dataDir = join(dir, "data");
  const logFile = join(dir, "server.log");
  if (asRoot) chownToPostgres(dir);

  const run = (tool: string, args: readonly string[]): Promise<string> => {
    const file = join(bin, tool);
    const [command, argv] = asRoot ? ["runuser", ["-u", SUPERUSER, "--", file, ...args]] : [file, [...args]];
    return new Promise((resolve, reject) => {
      execFile(
        command,
        argv,
        { timeout: COMMAND_TIMEOUT_MS, killSignal: "SIGKILL", cwd: dir },
        (err, stdout, stderr) => {
          if (err) reject(new Error(`${tool} ${args.join(" ")} failed: ${err.message}\n${stdout}${stderr}`));
          else resolve(stdout);
        },
      );
    });
  };

  await run("initdb", [
    "-D",
    dataDir,
    "-U",
    SUPERUSER,
    "-A",
    "trust",
    "-E",
    "UTF8",
    "--locale=C",
    "--no-sync",
  ]);
  const port = await freePort();
  await appendFile(
    join(dataDir, "postgresql.conf"),
    [
      "",
      "# keybroker owned test cluster",
      `port = ${port}`,
      "listen_addresses = '127.0.0.1'",
      // Our own socket directory: never collide with a system cluster's /var/run/postgresql.
      `unix_socket_directories = '${dir}'`,
      "max_connections = 60",
      "shared_buffers = 32MB",
      // A throwaway cluster: durability across an OS crash is not under test, a server crash is
      // (WAL is still written before commit returns, so a stop/crash of Postgres loses nothing).
      "fsync = off",
      "full_page_writes = off",
      "log_min_messages = warning",
      ...(options.settings ?? []),
      "",
    ].join("\n"),
  );

  let running = false;
  let destroyed = false;
  const url = (database = "postgres") => `postgres://${SUPERUSER}@127.0.0.1:${port}/${database}`;

  const start = async (): Promise<void> => {
    await run("pg_ctl", ["-D", dataDir, "-l", logFile, "-w", "-t", String(PG_CTL_WAIT_SEC), "start"]);
    running = true;
  };
  const stop = async (mode: "fast" | "immediate" = "fast"): Promise<void> => {
    await run("pg_ctl", ["-D", dataDir, "-m", mode, "-w", "-t", String(PG_CTL_WAIT_SEC), "stop"]);
    running = false;
  };

  // Belt and braces: a worker that dies without afterAll must not leave a postmaster behind.
  const onExit = (): void => {
    if (!running) return;
    const file = join(bin, "pg_ctl");
    const args = ["-D", dataDir, "-m", "immediate", "-w", "-t", "10", "stop"];
    spawnSync(asRoot ? "runuser" : file, asRoot ? ["-u", SUPERUSER, "--", file, ...args] : args, {
      timeout: 15_000,
      stdio: "ignore",
    });
  };
  process.once("exit", onExit);

  const query = async <T extends pg.QueryResultRow>(text: string, values: unknown[] = []): Promise<T[]> => {
    const client = new pg.Client({ connectionString: url(), connectionTimeoutMillis: 5_000 });
    await client.connect();
    try {
      return (await client.query<T>(text, values)).rows;
    } finally {
      await client.end();
    }
  };

  try {
    await start();
  } catch (err) {
    process.off("exit", onExit);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }

  return {
    port,
    dataDir,
    url,
    async createDatabase(prefix = "keybroker_fault") {
      // Never dropped one by one: destroy() deletes the whole cluster.
      return (await createThrowawayDatabase(url(), prefix)).url;
    },
    stop,
    start,
    async restart(mode = "fast") {
      await stop(mode);
      await start();
    },
    async terminateBackends(database) {
      const rows = await query<{ n: string }>(
        `select count(pg_terminate_backend(pid)) as n from pg_stat_activity
          where backend_type = 'client backend' and pid <> pg_backend_pid()
            and ($1::text is null or datname = $1)`,
        [database ?? null],
      );
      return Number(rows[0]?.n ?? 0);
    },
    async clientBackends(database) {
      const rows = await query<{ n: string }>(
        `select count(*) as n from pg_stat_activity
          where backend_type = 'client backend' and pid <> pg_backend_pid()
            and ($1::text is null or datname = $1)`,
        [database ?? null],
      );
      return Number(rows[0]?.n ?? 0);
    },
    async serverLog() {
      return readFile(logFile, "utf8").catch(() => "");
    },
    async destroy() {
      if (destroyed) return;
      destroyed = true;
      try {
        if (running) await stop("immediate");
      } finally {
        process.off("exit", onExit);
        await rm(dir, { recursive: true, force: true });
      }
    },
  };
}

function chownToPostgres(path: string): void {
  const ids = spawnSync("id", ["-u", SUPERUSER], { encoding: "utf8" });
  const gids = spawnSync("id", ["-g", SUPERUSER], { encoding: "utf8" });
  const uid = Number(ids.stdout.trim());
  const gid = Number(gids.stdout.trim());
  if (ids.status !== 0 || !Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new Error(`owned-postgres: running as root, but there is no "${SUPERUSER}" OS user to run as`);
  }
  chownSync(path, uid, gid);
}

/** A port nobody listens on right now (the kernel's pick, released before Postgres binds it). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
