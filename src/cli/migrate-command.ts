import { openOpsContext } from "../app/ops-context.js";
import { ConfigError, loadDatabaseConfig, loadRuntimeRole } from "../config/config.js";
import { grantRuntimeRole } from "../store/runtime-role.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";

/**
 * `keybroker migrate`: applies pending migrations; the broker itself never does (serve refuses).
 * Runs as the owner role; with KEYBROKER_RUNTIME_DB_ROLE it then grants the role `serve` uses what
 * it needs and no more (M1: INSERT/SELECT only on the audit trail; it owns nothing).
 */
export async function runMigrate(_args: string[], io: CliIo): Promise<number> {
  const database = loadDatabaseConfig(io.env);
  const runtimeRole = loadRuntimeRole(io.env);
  if (runtimeRole !== undefined && database.kind !== "postgres") {
    throw new ConfigError(["KEYBROKER_RUNTIME_DB_ROLE: roles need Postgres (DATABASE_URL)"]);
  }
  const ops = await openOpsContext({ database }, createCommandLogger(io), { schema: "migrate" });
  try {
    const applied = ops.migrationsApplied;
    io.stdout.write(applied.length === 0 ? "database is up to date\n" : `applied: ${applied.join(", ")}\n`);
    if (runtimeRole !== undefined) {
      await grantRuntimeRole(ops.database.db, runtimeRole);
      io.stdout.write(`runtime role ${runtimeRole}: granted (audit tables INSERT/SELECT only)\n`);
    }
    return 0;
  } finally {
    await ops.close();
  }
}
