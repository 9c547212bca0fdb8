import { openOpsContext } from "../app/ops-context.js";
import { ConfigError, loadDatabaseConfig, loadRuntimeRole } from "../config/config.js";
import { grantRuntimeRole } from "../store/runtime-role.js";
import { JSON_OPTION, parseCommandArgs } from "./cli-args.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec, DATABASE_HELP } from "./command-spec.js";
import { DEV_OPTION, openLockedOps, opsEnvironment } from "./ops-environment.js";

const HELP =
  "Usage: keybroker migrate [--json]\n\n" +
  "Applies pending database migrations (serve never does, and refuses to start while any is\n" +
  "pending). Run it as the tables' owner; with KEYBROKER_RUNTIME_DB_ROLE it then grants the role\n" +
  "`serve` connects as what it needs and no more (INSERT/SELECT only on the audit tables).\n\n" +
  DATABASE_HELP +
  "\nOptions:\n" +
  COMMON_HELP;

export const migrateCommand: CommandSpec = {
  name: "migrate",
  summary: "apply database migrations (as the owner; KEYBROKER_RUNTIME_DB_ROLE: grant serve's role)",
  help: HELP,
  subcommands: [],
  flags: ["--dev", "--json"],
  run: runMigrate,
};

/**
 * `keybroker migrate`: applies pending migrations; the broker itself never does (serve refuses).
 * Runs as the owner role; with KEYBROKER_RUNTIME_DB_ROLE it then grants the role `serve` uses what
 * it needs and no more (M1: INSERT/SELECT only on the audit trail; it owns nothing).
 */
export async function runMigrate(args: string[], io: CliIo): Promise<number> {
  const { values } = parseCommandArgs(args, { ...DEV_OPTION, ...JSON_OPTION });
  const env = opsEnvironment("migrate", io.env, values.dev);
  const database = loadDatabaseConfig(env);
  const runtimeRole = loadRuntimeRole(env);
  if (runtimeRole !== undefined && database.kind !== "postgres") {
    throw new ConfigError(["KEYBROKER_RUNTIME_DB_ROLE: roles need Postgres (DATABASE_URL)"]);
  }
  const ops = await openLockedOps("migrate", database, () =>
    openOpsContext({ database }, createCommandLogger(io), { schema: "migrate" }),
  );
  try {
    const applied = ops.migrationsApplied;
    if (!values.json) {
      io.stdout.write(applied.length === 0 ? "database is up to date\n" : `applied: ${applied.join(", ")}\n`);
    }
    if (runtimeRole !== undefined) {
      await grantRuntimeRole(ops.database.db, runtimeRole);
      if (!values.json) {
        io.stdout.write(`runtime role ${runtimeRole}: granted (audit tables INSERT/SELECT only)\n`);
      }
    }
    if (values.json) {
      io.stdout.write(`${JSON.stringify({ applied, runtimeRoleGranted: runtimeRole ?? null })}\n`);
    }
    return 0;
  } finally {
    await ops.close();
  }
}
