import { setTimeout as delay } from "node:timers/promises";
import { status } from "@grpc/grpc-js";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { findLeaks } from "../support/captured-logs.js";
import { type OwnedPostgres, startOwnedPostgres } from "../support/owned-postgres.js";
import {
  type BackgroundLoad,
  type BrokerDependencies,
  type CallOutcome,
  codeName,
  eventually,
  type InProcessBroker,
  listedIds,
  secretIdOf,
  startBrokerDependencies,
  startInProcessBroker,
  startLoad,
  tally,
} from "./fault-fixture.js";

// F54, F57: the broker on a Postgres cluster this file owns, so it can kill backends, stop the
// server and crash it. The pool is the production one, built from DATABASE_URL.

const POOL_SIZE = 5;
const CONNECT_TIMEOUT_MS = 1000;
const DEADLINE_MS = 5000;

describe("F54 F57 Postgres faults", () => {
  let cluster: OwnedPostgres;
  let deps: BrokerDependencies;
  let broker: InProcessBroker;
  let databaseUrl: string;
  let databaseName: string;

  beforeAll(async () => {
    cluster = await startOwnedPostgres();
    databaseUrl = await cluster.createDatabase();
    databaseName = new URL(databaseUrl).pathname.slice(1);
    deps = await startBrokerDependencies();
    broker = await startInProcessBroker(deps, databaseUrl, {
      KEYBROKER_DB_MAX_CONNECTIONS: String(POOL_SIZE),
      KEYBROKER_DB_CONNECT_TIMEOUT_MS: String(CONNECT_TIMEOUT_MS),
    });
  });

  let load: BackgroundLoad | undefined;
  afterEach(async () => {
    await load?.stop(); // a failed assertion must not leave calls running into the next test
    load = undefined;
  });

  afterAll(async () => {
    await broker?.close();
    await deps?.close();
    await cluster?.destroy();
  });

  /** Straight from the database, not through the broker: ids stored with their current version. */
  async function storedWithCurrentVersion(ids: readonly string[]): Promise<Set<string>> {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ id: string }>(
        `select s.id from secrets s
          join secret_versions v on v.secret_id = s.id and v.version = s.current_version
         where s.id = any($1::uuid[])`,
        [ids],
      );
      return new Set(rows.map((r) => r.id));
    } finally {
      await client.end();
    }
  }

  async function halfWrittenSecrets(): Promise<number> {
    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    try {
      const { rows } = await client.query<{ n: string }>(
        `select count(*) as n from secrets s where not exists
           (select 1 from secret_versions v where v.secret_id = s.id and v.version = s.current_version)`,
      );
      return Number(rows[0]?.n ?? -1);
    } finally {
      await client.end();
    }
  }

  function expectNoSecretIn(outcomes: readonly CallOutcome[]): void {
    const details = outcomes.map((o) => o.details).join("\n");
    expect(findLeaks(details, [deps.upstreamCredentials.bearer])).toEqual([]);
    expect(findLeaks(broker.logs.text(), [deps.upstreamCredentials.bearer])).toEqual([]);
  }

  it("F54 answers every PutSecret OK or UNAVAILABLE while backends are terminated mid-load, and keeps every acknowledged write", async () => {
    const user = await broker.session("google-oauth2|faults-pg-terminate");
    const acknowledged: string[] = [];
    load = startLoad(6, 80, async (worker, i) => {
      const outcome = await user.put(`terminate-${worker}-${i}`, { deadlineMs: DEADLINE_MS });
      if (outcome.code === status.OK) acknowledged.push(secretIdOf(outcome));
      return outcome;
    });

    expect(await eventually(async () => acknowledged.length >= 10, 15_000, 20)).toBe(true);
    let terminated = 0;
    for (let round = 0; round < 4; round++) {
      terminated += await cluster.terminateBackends(databaseName);
      await delay(100);
    }
    await delay(300);
    const outcomes = await load.stop();

    // The fault really happened: backends the broker was using were killed.
    expect(terminated).toBeGreaterThan(0);
    const unexpected = outcomes.filter((o) => o.code !== status.OK && o.code !== status.UNAVAILABLE);
    expect(unexpected.map((o) => `${codeName(o.code)}: ${o.details}`)).toEqual([]);
    expect(Math.max(...outcomes.map((o) => o.ms))).toBeLessThan(DEADLINE_MS);

    // The pool survived: the very next calls succeed, without restarting anything.
    const after = await user.put("terminate-after", { deadlineMs: DEADLINE_MS });
    expect(codeName(after.code)).toBe("OK");
    const listed = await user.list({ deadlineMs: DEADLINE_MS });
    expect(codeName(listed.code)).toBe("OK");

    // No acknowledged write lost, none half-written.
    expect(listedIds(listed)).toEqual(expect.arrayContaining(acknowledged));
    expect((await storedWithCurrentVersion(acknowledged)).size).toBe(acknowledged.length);
    expect(await halfWrittenSecrets()).toBe(0);
    // The pool, plus the one dedicated connection that LISTENs for logouts (issue 14).
    expect(await cluster.clientBackends(databaseName)).toBeLessThanOrEqual(POOL_SIZE + 1);
    expectNoSecretIn(outcomes);
  });

  it("F57 fails calls fast with UNAVAILABLE while the Postgres server is stopped, and keeps liveness up", async () => {
    const user = await broker.session("google-oauth2|faults-pg-stopped");
    const stored = await user.put("before-stop");
    expect(codeName(stored.code)).toBe("OK");
    const id = secretIdOf(stored);

    await cluster.stop("fast");
    let outcomes: CallOutcome[];
    let livez: number;
    try {
      outcomes = [];
      for (let i = 0; i < 3; i++) {
        outcomes.push(await user.put(`while-stopped-${i}`, { deadlineMs: DEADLINE_MS }));
        outcomes.push(await user.list({ deadlineMs: DEADLINE_MS }));
        outcomes.push(await user.call(id, "GET", "/ok", { deadlineMs: DEADLINE_MS }));
      }
      livez = (await fetch(`${broker.opsUrl}/livez`)).status;
    } finally {
      await cluster.start();
    }

    expect(outcomes.map((o) => codeName(o.code))).toEqual(outcomes.map(() => "UNAVAILABLE"));
    // Fail fast: a refused connection is known at once, never a wait for the deadline.
    expect(Math.max(...outcomes.map((o) => o.ms))).toBeLessThan(CONNECT_TIMEOUT_MS + 1000);
    expect(livez).toBe(200);
    expectNoSecretIn(outcomes);
  });

  it("F57 recovers without a broker restart after Postgres crashes under load, with every acknowledged secret intact", async () => {
    const user = await broker.session("google-oauth2|faults-pg-crash");
    const acknowledged: string[] = [];
    load = startLoad(4, 400, async (worker, i) => {
      const outcome = await user.put(`crash-${worker}-${i}`, { deadlineMs: DEADLINE_MS });
      if (outcome.code === status.OK) acknowledged.push(secretIdOf(outcome));
      else await delay(50); // no hot spin while the server is down
      return outcome;
    });
    expect(await eventually(async () => acknowledged.length >= 10, 15_000, 20)).toBe(true);
    const beforeCrash = acknowledged.length;

    await cluster.restart("immediate");
    const restartedAt = Date.now();
    // Service resumes by itself: new writes are acknowledged again soon after the server is back.
    const recovered = await eventually(async () => acknowledged.length > beforeCrash + 5, 10_000, 50);
    const recoveryMs = Date.now() - restartedAt;
    const outcomes = await load.stop();

    expect(recovered, `no acknowledged write after the restart (${JSON.stringify(tally(outcomes))})`).toBe(
      true,
    );
    expect(recoveryMs).toBeLessThan(10_000);
    const unexpected = outcomes.filter((o) => o.code !== status.OK && o.code !== status.UNAVAILABLE);
    expect(unexpected.map((o) => `${codeName(o.code)}: ${o.details}`)).toEqual([]);

    const listed = await user.list({ deadlineMs: DEADLINE_MS });
    expect(codeName(listed.code)).toBe("OK");
    expect(listedIds(listed)).toEqual(expect.arrayContaining(acknowledged));
    expect((await storedWithCurrentVersion(acknowledged)).size).toBe(acknowledged.length);
    expect(await halfWrittenSecrets()).toBe(0);
    expectNoSecretIn(outcomes);
  });
});
