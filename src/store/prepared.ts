import type { PGlite } from "@electric-sql/pglite";
import type pg from "pg";

/**
 * A SQL statement for the hot path. Kysely builds a frozen query tree per call (~110 µs
 * CPU and GC pressure per query, measured in bench/hot-path-parts.ts); a named prepared
 * statement is parsed once per connection and costs about half. Cold paths keep kysely.
 */
export interface PreparedStatement {
  /** Unique per statement text: pg prepares each name once per connection. */
  readonly name: string;
  readonly text: string;
}

/** Runs prepared statements on the same database the Kysely instance talks to. */
export interface PreparedRunner {
  rows<R>(statement: PreparedStatement, values: readonly unknown[]): Promise<R[]>;
}

export function pgPreparedRunner(pool: pg.Pool): PreparedRunner {
  return {
    async rows<R>(statement: PreparedStatement, values: readonly unknown[]) {
      const result = await pool.query({ name: statement.name, text: statement.text, values: [...values] });
      return result.rows as R[];
    },
  };
}

/** PGlite is one connection and caches plans itself; its mutex orders these with kysely's queries. */
export function pgliteRunner(pglite: PGlite): PreparedRunner {
  return {
    async rows<R>(statement: PreparedStatement, values: readonly unknown[]) {
      const result = await pglite.query<R>(statement.text, [...values]);
      return result.rows;
    },
  };
}
