import { Kysely, PostgresDialect } from "kysely";
import pg from "pg";
import type { Logger } from "../log/logger.js";
import type { Redacted } from "../log/redacted.js";
import type { DatabaseHandle, NotificationSubscription } from "./database-handle.js";
import { INT8_OID, parseInt8 } from "./int8.js";
import { pgPreparedRunner } from "./prepared.js";
import type { Database } from "./schema.js";
import { translatingDialect } from "./translating-dialect.js";

/** Where the data lives: a Postgres server, or the embedded PGlite (a directory, or memory). */
export type DatabaseConfig =
  | {
      readonly kind: "postgres";
      /** Carries the password: wrapped so a logged config prints "[REDACTED]". */
      readonly url: Redacted<string>;
      readonly maxConnections: number;
      /** How long a call may wait for a pooled connection before failing fast. */
      readonly connectTimeoutMs: number;
      readonly statementTimeoutMs: number;
    }
  | { readonly kind: "pglite"; readonly dataDir: string | undefined };

export type { DatabaseHandle, NotificationSubscription } from "./database-handle.js";

export async function openDatabase(config: DatabaseConfig, logger: Logger): Promise<DatabaseHandle> {
  if (config.kind === "pglite") {
    // Loaded only here: PGlite (~26 MB, with its dialect) is an optional dependency that the
    // production image leaves out, and a broker on a Postgres URL must never need it.
    const { openPglite } = await import("./pglite-database.js");
    return openPglite(config.dataDir);
  }

  const pool = new pg.Pool({
    connectionString: config.url.unwrap(),
    max: config.maxConnections,
    connectionTimeoutMillis: config.connectTimeoutMs,
    idleTimeoutMillis: 30_000,
    statement_timeout: config.statementTimeoutMs,
    types: {
      getTypeParser: ((oid: number, format?: "text" | "binary") =>
        oid === INT8_OID ? parseInt8 : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
    },
  });
  // An idle client whose backend was terminated emits here; without a listener the process dies.
  pool.on("error", (err) => logger.warn({ err: { message: err.message } }, "postgres idle client error"));
  // A CHECKED-OUT client has no pool listener (pg-pool removes it on checkout), and kysely holds
  // clients for every query: without this, a backend killed mid-query crashes the process
  // (found by test/faults F54). The query itself still fails, and pg-pool drops the dead client.
  pool.on("connect", (client) => {
    client.on("error", (err) => logger.warn({ err: { message: err.message } }, "postgres connection lost"));
  });
  const db = new Kysely<Database>({ dialect: translatingDialect(new PostgresDialect({ pool })) });
  return {
    db,
    prepared: pgPreparedRunner(pool),
    kind: "postgres",
    listen: (channel, onNotice, onLost) => listenOnPostgres(config, channel, onNotice, onLost),
    async close() {
      await db.destroy();
    },
  };
}

async function listenOnPostgres(
  config: Extract<DatabaseConfig, { kind: "postgres" }>,
  channel: string,
  onNotice: (payload: string) => void,
  onLost: (err: unknown) => void,
): Promise<NotificationSubscription> {
  const client = new pg.Client({
    connectionString: config.url.unwrap(),
    connectionTimeoutMillis: config.connectTimeoutMs,
    // A confirm on a half-open connection must fail rather than hang: that is how loss is seen.
    query_timeout: config.connectTimeoutMs,
    keepAlive: true,
    // Named, so an operator (or a fault test) can tell it apart in pg_stat_activity.
    application_name: `keybroker listen ${channel}`,
  });
  let lost = false;
  const lose = (err: unknown): void => {
    if (lost) return;
    lost = true;
    // A dead (or half-open) connection is closed, never reused: the caller listens anew.
    client.end().catch(() => undefined);
    onLost(err);
  };
  client.on("notification", (message) => {
    if (message.channel === channel) onNotice(message.payload ?? "");
  });
  client.on("error", lose);
  client.on("end", () => lose(new Error("listening connection ended")));
  try {
    await client.connect();
    await client.query(`listen ${client.escapeIdentifier(channel)}`);
  } catch (err) {
    lost = true; // the caller sees the throw; no second report
    await client.end().catch(() => undefined);
    throw err;
  }
  return {
    async confirm() {
      try {
        await client.query("select 1");
      } catch (err) {
        lose(err);
        throw err;
      }
    },
    async close() {
      lost = true;
      await client.end().catch(() => undefined);
    },
  };
}
