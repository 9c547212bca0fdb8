import { CompiledQuery, type Kysely } from "kysely";
import type pg from "pg";
import { toStoreError } from "./database-errors.js";

/**
 * A SQL statement for the hot path. Kysely builds a frozen query tree per call (~110 µs
 * CPU and GC pressure per query, measured in bench/tools/hot-path-parts.ts); a named prepared
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
  /**
   * Runs `work` in one transaction on one connection: commits if it resolves, rolls back if it
   * throws. `work` must use the runner it is given, never this one (PGlite would deadlock).
   */
  transaction<T>(work: (tx: PreparedRunner) => Promise<T>): Promise<T>;
}

function nestedTransaction(): Promise<never> {
  return Promise.reject(new Error("nested transactions are not supported"));
}

// Driver errors are translated here, where they are born (toStoreError): an outage leaves the
// runner as BrokerError "unavailable", anything else unchanged. `work`'s own errors are not
// touched: they were translated where they came from, or are not the database's.
async function clientRows<R>(
  client: pg.Pool | pg.PoolClient,
  statement: PreparedStatement,
  values: readonly unknown[],
): Promise<R[]> {
  try {
    const result = await client.query({ name: statement.name, text: statement.text, values: [...values] });
    return result.rows as R[];
  } catch (err) {
    throw toStoreError(err);
  }
}

async function clientCommand(client: pg.PoolClient, text: "begin" | "commit"): Promise<void> {
  try {
    await client.query(text);
  } catch (err) {
    throw toStoreError(err);
  }
}

async function connect(pool: pg.Pool): Promise<pg.PoolClient> {
  try {
    return await pool.connect();
  } catch (err) {
    throw toStoreError(err);
  }
}

export function pgPreparedRunner(pool: pg.Pool): PreparedRunner {
  return {
    rows: (statement, values) => clientRows(pool, statement, values),
    async transaction(work) {
      const client = await connect(pool);
      const tx: PreparedRunner = {
        rows: (statement, values) => clientRows(client, statement, values),
        transaction: nestedTransaction,
      };
      // A connection that cannot even roll back is in an unknown state: destroyed, never reused.
      let broken: Error | undefined;
      try {
        await clientCommand(client, "begin");
        const result = await work(tx);
        await clientCommand(client, "commit");
        return result;
      } catch (err) {
        await client.query("rollback").catch((rollbackErr: unknown) => {
          broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
        });
        throw err;
      } finally {
        client.release(broken);
      }
    },
  };
}

/**
 * PGlite is ONE connection, so whoever holds it holds every open transaction on it. Statements
 * therefore go through kysely's PGlite driver, which lends that connection to one user at a time
 * (a kysely transaction keeps it until commit): a hot-path read can never land inside another
 * caller's open transaction, see its uncommitted rows, or abort it by failing. PGlite caches
 * plans itself, so the raw query costs no parse.
 */
export function pgliteRunner<DB>(db: Kysely<DB>): PreparedRunner {
  const on = (executor: Kysely<DB>, nested: boolean): PreparedRunner => ({
    async rows<R>(statement: PreparedStatement, values: readonly unknown[]) {
      const result = await executor.executeQuery<R>(CompiledQuery.raw(statement.text, [...values]));
      return result.rows as R[];
    },
    transaction: nested
      ? nestedTransaction
      : (work) => executor.transaction().execute((trx) => work(on(trx, true))),
  });
  return on(db, false);
}
