import { randomBytes } from "node:crypto";
import pg from "pg";

/**
 * One empty database created for a test or a benchmark run on an existing Postgres server, and
 * dropped afterwards. Shared by test/support (test-database, owned-postgres) and bench/, so every
 * throwaway database is made and removed the same way. No vitest import: bench/ runs outside it.
 */
export interface ThrowawayDatabase {
  readonly name: string;
  /** `adminUrl` with the database swapped for this one. */
  readonly url: string;
  /** Drops the database, forcing out any connection still open (`with (force)`). */
  drop(): Promise<void>;
}

const CONNECT_TIMEOUT_MS = 5_000;

/** Creates `<prefix>_<random hex>` on the server `adminUrl` points at (a superuser URL). */
export async function createThrowawayDatabase(adminUrl: string, prefix: string): Promise<ThrowawayDatabase> {
  // The name is spliced into SQL (CREATE DATABASE takes no parameters): only a fixed identifier prefix.
  if (!/^[a-z_][a-z0-9_]*$/.test(prefix)) throw new Error(`not a plain identifier prefix: ${prefix}`);
  const name = `${prefix}_${randomBytes(5).toString("hex")}`;
  await withAdmin(adminUrl, (admin) => admin.query(`create database ${name}`));
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return {
    name,
    url: url.toString(),
    async drop() {
      await withAdmin(adminUrl, (admin) => admin.query(`drop database if exists ${name} with (force)`));
    },
  };
}

async function withAdmin(adminUrl: string, use: (admin: pg.Client) => Promise<unknown>): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  await admin.connect();
  try {
    await use(admin);
  } finally {
    await admin.end();
  }
}
