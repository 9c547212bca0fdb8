import { BrokerError } from "../errors.js";
import type { Logger } from "../log/logger.js";
import { type DatabaseConfig, type DatabaseHandle, openDatabase } from "../store/database.js";
import { migrateToLatest, pendingMigrations } from "../store/migrate.js";
import type { Lifecycle } from "./lifecycle.js";

export interface StorageDeps {
  readonly config: DatabaseConfig;
  readonly logger: Logger;
  /** A database the caller opened (tests, the dev command): used as is and left open. */
  readonly database?: DatabaseHandle | undefined;
}

/** The database: opened from config, or the caller's; only one this step opened is closed. */
export async function openStorage(lifecycle: Lifecycle, deps: StorageDeps): Promise<DatabaseHandle> {
  if (deps.database !== undefined) return deps.database;
  const database = await openDatabase(deps.config, deps.logger);
  lifecycle.defer("database", () => database.close());
  return database;
}

/** `migrate` applies what is pending; `require-current` refuses to go on while anything is. */
export type SchemaPolicy = "migrate" | "require-current";

/** Brings the schema to what this build expects, or refuses; returns the migrations applied now. */
export async function prepareSchema(
  database: DatabaseHandle,
  policy: SchemaPolicy,
  logger: Logger,
): Promise<readonly string[]> {
  if (policy === "migrate") {
    const applied = await migrateToLatest(database.db);
    if (applied.length > 0) logger.info({ applied }, "database migrated");
    return applied;
  }
  const pending = await pendingMigrations(database.db);
  if (pending.length > 0) {
    // Code written for the new schema must never run on the old one: migration is an explicit step.
    throw new BrokerError(
      "failed_precondition",
      `the database has ${pending.length} pending migration(s): run \`keybroker migrate\` first`,
    );
  }
  return [];
}
