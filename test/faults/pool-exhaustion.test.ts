import { status } from "@grpc/grpc-js";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type OwnedPostgres, startOwnedPostgres } from "../support/owned-postgres.js";
import {
  type BrokerDependencies,
  codeName,
  type InProcessBroker,
  startBrokerDependencies,
  startInProcessBroker,
} from "./fault-fixture.js";

// F55: with its connection pool exhausted (one connection, held by a query stuck behind a lock
// taken from outside), the broker fails fast with UNAVAILABLE instead of queueing callers until
// their deadlines, and recovers as soon as the database frees up.

const CONNECT_TIMEOUT_MS = 200;
const STATEMENT_TIMEOUT_MS = 1000;

describe("F55 pool exhaustion", () => {
  let cluster: OwnedPostgres;
  let deps: BrokerDependencies;
  let broker: InProcessBroker;
  let databaseUrl: string;

  beforeAll(async () => {
    cluster = await startOwnedPostgres();
    databaseUrl = await cluster.createDatabase();
    deps = await startBrokerDependencies();
    broker = await startInProcessBroker(deps, databaseUrl, {
      KEYBROKER_DB_MAX_CONNECTIONS: "1",
      KEYBROKER_DB_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
      KEYBROKER_DB_STATEMENT_TIMEOUT_MS: String(STATEMENT_TIMEOUT_MS),
    });
  }, 120_000);

  afterAll(async () => {
    await broker?.close();
    await deps?.close();
    await cluster?.destroy();
  });

  it("F55 answers UNAVAILABLE fast, never waiting out the deadline, while the pool is exhausted; then recovers", async () => {
    const session = await broker.session("auth0|f55-user");
    expect((await session.list()).code).toBe(status.OK);

    const locker = new pg.Client({ connectionString: databaseUrl });
    await locker.connect();
    try {
      await locker.query("begin");
      await locker.query("lock table caller_keys in access exclusive mode");
      const started = Date.now();
      const outcomes = await Promise.all(
        Array.from({ length: 8 }, () => session.list({ deadlineMs: 10_000 })),
      );
      const elapsed = Date.now() - started;
      expect(outcomes.map((o) => codeName(o.code))).toEqual(Array(8).fill("UNAVAILABLE"));
      // Bounded by the statement timeout and the pool's connect timeout, far below the deadline.
      expect(elapsed).toBeLessThan(STATEMENT_TIMEOUT_MS + 3000);
    } finally {
      await locker.query("rollback").catch(() => undefined);
      await locker.end();
    }
    expect((await session.list()).code).toBe(status.OK);
  });
});
