import { sql } from "kysely";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import { Redacted } from "../../../src/log/redacted.js";
import { isUniqueViolation } from "../../../src/store/bytes.js";
import { type DatabaseHandle, openDatabase } from "../../../src/store/database.js";
import type { PreparedStatement } from "../../../src/store/prepared.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

// Driver errors are translated where they are born: whichever way a query leaves the store
// (kysely, a kysely transaction, the prepared runner, its transactions), an outage arrives as
// BrokerError "unavailable" with the driver's error as `cause`; any other error is untouched.

const SLEEP: PreparedStatement = { name: "test_sleep", text: "select pg_sleep($1)" };
const BACKEND_PID: PreparedStatement = { name: "test_backend_pid", text: "select pg_backend_pid() as pid" };
const INSERT_STATE: PreparedStatement = {
  name: "test_insert_state_twice",
  text: "insert into broker_state (name, wrapped_value, master_key_id) values ($1, '\\x00', 'k')",
};

/** The error `pending` rejects with (fails the test if it resolves). */
async function rejectionOf(pending: Promise<unknown>): Promise<unknown> {
  try {
    await pending;
  } catch (err) {
    return err;
  }
  throw new Error("expected the database call to fail");
}

function expectUnavailable(err: unknown): void {
  expect(err).toBeInstanceOf(BrokerError);
  expect(err).toMatchObject({ code: "unavailable", message: "database unavailable" });
  expect(err instanceof Error ? err.cause : undefined).toBeDefined();
}

async function openPostgres(
  url: string,
  limits: { maxConnections?: number; connectTimeoutMs?: number; statementTimeoutMs?: number } = {},
): Promise<DatabaseHandle> {
  return openDatabase(
    {
      kind: "postgres",
      url: new Redacted(url),
      maxConnections: limits.maxConnections ?? 2,
      connectTimeoutMs: limits.connectTimeoutMs ?? 2_000,
      statementTimeoutMs: limits.statementTimeoutMs ?? 30_000,
    },
    createLogger({ level: "silent" }),
  );
}

describe("a database nobody listens on", () => {
  let database: DatabaseHandle;
  beforeAll(async () => {
    // Port 1 on loopback: the connection is refused at once (ECONNREFUSED).
    database = await openPostgres("postgres://postgres@127.0.0.1:1/none", { connectTimeoutMs: 1_000 });
  });
  afterAll(async () => {
    await database.close();
  });

  it("fails a kysely query with BrokerError unavailable", async () => {
    expectUnavailable(await rejectionOf(sql`select 1`.execute(database.db)));
  });

  it("fails a kysely transaction with BrokerError unavailable", async () => {
    expectUnavailable(
      await rejectionOf(database.db.transaction().execute((trx) => sql`select 1`.execute(trx))),
    );
  });

  it("fails a prepared statement with BrokerError unavailable", async () => {
    expectUnavailable(await rejectionOf(database.prepared.rows(BACKEND_PID, [])));
  });

  it("fails a prepared transaction with BrokerError unavailable", async () => {
    expectUnavailable(await rejectionOf(database.prepared.transaction((tx) => tx.rows(BACKEND_PID, []))));
  });
});

describe.skipIf(!process.env.TEST_DATABASE_URL)("Postgres faults, seen from the store", () => {
  let owner: TestDatabase;
  let url: string;
  beforeAll(async () => {
    owner = await createTestDatabase("postgres");
    if (owner.url === undefined) throw new Error("a Postgres test database has a URL");
    url = owner.url;
  });
  afterAll(async () => {
    await owner.close();
  });

  async function terminate(pid: number): Promise<void> {
    const admin = new pg.Client({ connectionString: url });
    await admin.connect();
    try {
      await admin.query("select pg_terminate_backend($1)", [pid]);
    } finally {
      await admin.end();
    }
  }

  it("turns a statement timeout (57014) into BrokerError unavailable, on kysely and prepared paths", async () => {
    const database = await openPostgres(url, { statementTimeoutMs: 50 });
    try {
      expectUnavailable(await rejectionOf(sql`select pg_sleep(1)`.execute(database.db)));
      expectUnavailable(await rejectionOf(database.prepared.rows(SLEEP, [1])));
      expectUnavailable(await rejectionOf(database.prepared.transaction((tx) => tx.rows(SLEEP, [1]))));
      // The timeout cost one statement, not the pool: the next query works.
      expect((await sql<{ one: number }>`select 1 as one`.execute(database.db)).rows).toEqual([{ one: 1 }]);
    } finally {
      await database.close();
    }
  });

  it("turns an exhausted pool into BrokerError unavailable instead of a wait", async () => {
    const database = await openPostgres(url, { maxConnections: 1, connectTimeoutMs: 100 });
    let release = () => {};
    const held = new Promise<void>((resolve) => {
      release = resolve;
    });
    // The pool's only connection, held open by a transaction until `release`.
    let holding = () => {};
    const holds = new Promise<void>((resolve) => {
      holding = resolve;
    });
    const holder = database.db.transaction().execute(async (trx) => {
      await sql`select 1`.execute(trx);
      holding();
      await held;
    });
    try {
      await holds;
      expectUnavailable(await rejectionOf(sql`select 1`.execute(database.db)));
      expectUnavailable(await rejectionOf(database.prepared.rows(BACKEND_PID, [])));
      expectUnavailable(await rejectionOf(database.prepared.transaction((tx) => tx.rows(BACKEND_PID, []))));
    } finally {
      release();
      await holder;
      await database.close();
    }
  });

  it("turns a connection dropped mid-transaction into BrokerError unavailable, on kysely and prepared paths", async () => {
    const database = await openPostgres(url);
    try {
      const viaKysely = database.db.transaction().execute(async (trx) => {
        const { rows } = await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx);
        await terminate(rows[0]?.pid ?? 0);
        await sql`select 1`.execute(trx);
      });
      expectUnavailable(await rejectionOf(viaKysely));

      const viaPrepared = database.prepared.transaction(async (tx) => {
        const [row] = await tx.rows<{ pid: number }>(BACKEND_PID, []);
        await terminate(row?.pid ?? 0);
        await tx.rows(BACKEND_PID, []);
      });
      expectUnavailable(await rejectionOf(viaPrepared));
      // The dead clients were dropped, not reused: the store works again.
      expect(await database.prepared.rows(BACKEND_PID, [])).toHaveLength(1);
    } finally {
      await database.close();
    }
  });
});

describeOnEachDatabase("errors that are not outages, on %s", (kind) => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterAll(async () => {
    await database.close();
  });

  it("passes a unique violation through unchanged, so isUniqueViolation still sees 23505", async () => {
    await database.prepared.rows(INSERT_STATE, ["twice"]);
    const viaPrepared = await rejectionOf(database.prepared.rows(INSERT_STATE, ["twice"]));
    const viaKysely = await rejectionOf(
      sql`insert into broker_state (name, wrapped_value, master_key_id) values ('twice', '\\x00', 'k')`.execute(
        database.db,
      ),
    );
    for (const err of [viaPrepared, viaKysely]) {
      expect(err).not.toBeInstanceOf(BrokerError);
      expect(isUniqueViolation(err)).toBe(true);
    }
  });

  it("rethrows a transaction's own error as it was thrown", async () => {
    const own = new BrokerError("not_found", "no such row");
    expect(await rejectionOf(database.prepared.transaction(() => Promise.reject(own)))).toBe(own);
    expect(await rejectionOf(database.db.transaction().execute(() => Promise.reject(own)))).toBe(own);
  });
});
