import { openOpsContext } from "../app/ops-context.js";
import { loadDatabaseConfig } from "../config/config.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";

/** `keybroker migrate`: applies pending migrations; the broker itself never does (serve refuses). */
export async function runMigrate(_args: string[], io: CliIo): Promise<number> {
  const ops = await openOpsContext({ database: loadDatabaseConfig(io.env) }, createCommandLogger(io), {
    schema: "migrate",
  });
  try {
    const applied = ops.migrationsApplied;
    io.stdout.write(applied.length === 0 ? "database is up to date\n" : `applied: ${applied.join(", ")}\n`);
    return 0;
  } finally {
    await ops.close();
  }
}
