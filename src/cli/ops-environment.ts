import { existsSync } from "node:fs";
import { ConfigError } from "../config/config.js";
import type { DatabaseConfig } from "../store/database.js";
import { UsageError } from "./cli-args.js";
import type { CliIo } from "./cli-io.js";
import { type DataDirLock, lockDataDir } from "./data-dir-lock.js";
import { devDir, devPath, refuseProduction } from "./dev-environment.js";

type Env = CliIo["env"];

/** `--dev`: operator commands work on the dev broker's data directory and keyring file. */
export const DEV_OPTION = { dev: { type: "boolean", default: false } } as const;

/**
 * The environment an operator command reads: the process's, or with `--dev` the dev broker's
 * embedded database and local keyring (development only; never together with DATABASE_URL).
 */
export function opsEnvironment(command: string, env: Env, dev: boolean | undefined): Env {
  if (dev !== true) return env;
  refuseProduction(`keybroker ${command} --dev`, env);
  if (env.DATABASE_URL !== undefined) {
    throw new UsageError(
      "--dev works on the dev broker's embedded database: unset DATABASE_URL, or drop --dev",
    );
  }
  if (!existsSync(devPath(env, "pgdata"))) {
    throw new ConfigError([`--dev: no dev database in ${devDir(env)}/ (run keybroker dev once first)`]);
  }
  return {
    ...env,
    KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
    KEYBROKER_PGLITE_DIR: devPath(env, "pgdata"),
    KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
    KEYBROKER_KEYRING: "local",
    KEYBROKER_LOCAL_KEYRING_FILE: devPath(env, "keyring.json"),
  };
}

/**
 * An operator command's claim on its database. Never an in-memory one: `migrate` would report
 * "applied" to nothing and `caller-keys create` print a key no broker knows. An embedded data
 * directory is locked for the command's run: PGlite is one process's (a running `keybroker dev`
 * holds it).
 */
export async function claimOpsDatabase(
  command: string,
  database: DatabaseConfig,
): Promise<DataDirLock | undefined> {
  if (database.kind !== "pglite") return undefined;
  if (database.dataDir === undefined) {
    throw new ConfigError([
      "KEYBROKER_PGLITE_DIR: required for an operator command on the embedded database (an in-memory " +
        "one would vanish with the command); or set DATABASE_URL, or use --dev for the dev broker's",
    ]);
  }
  return lockDataDir(database.dataDir, `keybroker ${command}`);
}

/** Opens an operator command's context with its database claimed; `close` also releases the claim. */
export async function openLockedOps<C extends { close(): Promise<void> }>(
  command: string,
  database: DatabaseConfig,
  open: () => Promise<C>,
): Promise<C> {
  const lock = await claimOpsDatabase(command, database);
  let context: C;
  try {
    context = await open();
  } catch (err) {
    await lock?.release();
    throw err;
  }
  const close = async () => {
    try {
      await context.close();
    } finally {
      await lock?.release();
    }
  };
  return { ...context, close };
}
