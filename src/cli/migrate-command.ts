import { loadDatabaseConfig } from "../config/config.js";
import { createLogger } from "../log/logger.js";
import { openDatabase } from "../store/database.js";
import { migrateToLatest } from "../store/migrate.js";

export async function runMigrate(): Promise<number> {
  const logger = createLogger({ level: process.env.LOG_LEVEL ?? "info" });
  const database = await openDatabase(loadDatabaseConfig(process.env), logger);
  try {
    const applied = await migrateToLatest(database.db);
    process.stdout.write(
      applied.length === 0 ? "database is up to date\n" : `applied: ${applied.join(", ")}\n`,
    );
    return 0;
  } finally {
    await database.close();
  }
}
