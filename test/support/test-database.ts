import { readFile } from "node:fs/promises";
import { PGlite } from "@electric-sql/pglite";
import { type Kysely, sql } from "kysely";
import { describe, inject } from "vitest";
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { type DatabaseHandle, openDatabase, PGLITE_PARSERS, pgliteHandle } from "../../src/store/database.js";
import { migrateToLatest } from "../../src/store/migrate.js";
import type { Database } from "../../src/store/schema.js";
import { POSTGRES_SKIP_REASON } from "./skip-reasons.js";
import { createThrowawayDatabase } from "./throwaway-database.js";

export type TestDatabaseKind = "pglite" | "postgres";

/**
 * Every storage-touching suite runs on the embedded PGlite and on a real Postgres server
 * (TEST_DATABASE_URL; CI sets it). Registers `body` once per database kind. Without
 * TEST_DATABASE_URL the Postgres half is still registered, as skipped with the reason in its
 * title, so the run's counts say how many tests did not run instead of silently leaving them out
 * (catalogue W6).
 */
export function describeOnEachDatabase(title: string, body: (kind: TestDatabaseKind) => void): void {
  for (const kind of ["pglite", "postgres"] as const) {
    const missing = kind === "postgres" && !process.env.TEST_DATABASE_URL;
    const named = title.replace("%s", kind);
    describe.skipIf(missing)(missing ? `${named} (${POSTGRES_SKIP_REASON})` : named, () => body(kind));
  }
}

export interface TestDatabase extends DatabaseHandle {
  /** Empties every table (between tests). */
  truncate(): Promise<void>;
  /** For Postgres: the URL of this throwaway database (to start a broker process on it). */
  readonly url: string | undefined;
}

const TABLES = [
  "secret_versions",
  "secrets",
  "users",
  "caller_keys",
  "broker_state",
  "audit_events",
  "audit_chain_head",
  "audit_checkpoints",
  "outbound_nonces",
  "session_revocations",
  "logout_token_ids",
  "dpop_proof_ids",
  "rate_limit_leases",
  "oauth_apps",
  "oauth_authorizations",
] as const;

/** A throwaway, migrated database of the given kind; `close()` destroys it. */
export async function createTestDatabase(kind: TestDatabaseKind): Promise<TestDatabase> {
  if (kind === "pglite") {
    const template = await readFile(inject("pgliteTemplate"));
    const pglite = await PGlite.create({ loadDataDir: new Blob([template]), parsers: PGLITE_PARSERS });
    const handle = pgliteHandle(pglite);
    return { ...handle, url: undefined, truncate: () => truncateAll(handle.db) };
  }

  const adminUrl = process.env.TEST_DATABASE_URL;
  if (adminUrl === undefined) throw new Error("TEST_DATABASE_URL is not set");
  const throwaway = await createThrowawayDatabase(adminUrl, "keybroker_test");
  const handle = await openDatabase(
    {
      kind: "postgres",
      url: new Redacted(throwaway.url),
      maxConnections: 5,
      connectTimeoutMs: 5_000,
      statementTimeoutMs: 30_000,
    },
    createLogger({ level: "silent" }),
  );
  await migrateToLatest(handle.db);
  return {
    ...handle,
    url: throwaway.url,
    truncate: () => truncateAll(handle.db),
    async close() {
      await handle.close();
      await throwaway.drop();
    },
  };
}

// The audit tables refuse TRUNCATE (M1); the test plays the superuser, whose replica mode skips
// triggers for this one transaction.
async function truncateAll(db: Kysely<Database>): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await sql`set local session_replication_role = replica`.execute(tx);
    await sql`truncate table ${sql.join(TABLES.map((t) => sql.table(t)))} cascade`.execute(tx);
  });
}

/** For assertions that need a raw view of every stored byte (a "stolen database dump"). */
export async function dumpAllRows(db: Kysely<Database>): Promise<string> {
  const parts: string[] = [];
  for (const table of TABLES) {
    const rows = await sql<Record<string, unknown>>`select * from ${sql.table(table)}`.execute(db);
    for (const row of rows.rows) {
      for (const value of Object.values(row)) {
        if (value instanceof Uint8Array)
          parts.push(Buffer.from(value).toString("latin1"), Buffer.from(value).toString("hex"));
        else parts.push(typeof value === "string" ? value : JSON.stringify(value));
      }
    }
  }
  return parts.join("\n");
}
