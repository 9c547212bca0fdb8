import type { Kysely } from "kysely";
import { Migrator } from "kysely/migration";
import { migrations } from "../../migrations/index.js";
import { BrokerError } from "../errors.js";
import type { Database } from "./schema.js";

/** Brings the schema to the latest migration; returns the names applied by this run. */
export async function migrateToLatest(db: Kysely<Database>): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: "keybroker_migrations",
    migrationLockTableName: "keybroker_migrations_lock",
  });
  const { error, results } = await migrator.migrateToLatest();
  if (error !== undefined) {
    throw new BrokerError("failed_precondition", "database migration failed", { cause: error });
  }
  return (results ?? []).filter((r) => r.status === "Success").map((r) => r.migrationName);
}

/** Names of migrations not yet applied (readiness and `keybroker migrate --check`). */
export async function pendingMigrations(db: Kysely<Database>): Promise<string[]> {
  const migrator = new Migrator({
    db,
    provider: { getMigrations: async () => migrations },
    migrationTableName: "keybroker_migrations",
    migrationLockTableName: "keybroker_migrations_lock",
  });
  const all = await migrator.getMigrations();
  return all.filter((m) => m.executedAt === undefined).map((m) => m.name);
}
