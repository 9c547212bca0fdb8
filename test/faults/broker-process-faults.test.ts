import { setTimeout as delay } from "node:timers/promises";
import { type Client, status } from "@grpc/grpc-js";
import pg from "pg";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { findLeaks } from "../support/captured-logs.js";
import {
  createGrpcClients,
  type GrpcClients,
  serverStream,
  type WireMessage,
} from "../support/grpc-client.js";
import { type OwnedPostgres, startOwnedPostgres } from "../support/owned-postgres.js";
import {
  type BackgroundLoad,
  type BrokerChild,
  type BrokerDependencies,
  type CallOutcome,
  codeName,
  eventually,
  healthClient,
  secretIdOf,
  spawnBroker,
  startBrokerDependencies,
  startLoad,
  type UserSession,
  userSession,
} from "./fault-fixture.js";

// F54, F56: `keybroker serve` as a real child process on a Postgres cluster this file owns.
// Only a separate process can show what a signal does, or that a fault kills the process.

const GRACE_MS = 5000;
const KMS_LATENCY_MS = 1500;

describe("F54 F56 the broker process under faults", () => {
  let cluster: OwnedPostgres;
  let deps: BrokerDependencies;
  let child: BrokerChild | undefined;
  let clients: GrpcClients | undefined;
  let health: Client | undefined;
  let load: BackgroundLoad | undefined;

  beforeAll(async () => {
    cluster = await startOwnedPostgres();
    deps = await startBrokerDependencies();
  });

  afterEach(async () => {
    deps.kms.setFaults({ latencyMs: 0 });
    await child?.close(); // first, so a load left running by a failed assertion ends at once
    await load?.stop();
    load = undefined;
    clients?.close();
    health?.close();
    child = undefined;
  });

  afterAll(async () => {
    await deps?.close();
    await cluster?.destroy();
  });

  async function startChild(): Promise<{ user: UserSession; databaseUrl: string }> {
    const databaseUrl = await cluster.createDatabase();
    child = await spawnBroker(deps, databaseUrl, {
      KEYBROKER_SHUTDOWN_GRACE_MS: String(GRACE_MS),
      KEYBROKER_DB_MAX_CONNECTIONS: "5",
      KEYBROKER_DB_CONNECT_TIMEOUT_MS: "1000",
      // Every call that needs a data key asks KMS, so KMS latency makes calls slow on demand.
      KEYBROKER_DATA_KEY_CACHE_MAX_USES: "1",
    });
    clients = createGrpcClients(child.grpcAddress);
    const token = await deps.issuer.sign({ sub: "google-oauth2|faults-process" });
    const user = userSession(clients, {
      callerKey: child.callerKey,
      token,
      secretValue: deps.upstreamCredentials.bearer,
    });
    return { user, databaseUrl };
  }

  async function query<T extends pg.QueryResultRow>(
    url: string,
    text: string,
    values: unknown[],
  ): Promise<T[]> {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      return (await client.query<T>(text, values)).rows;
    } finally {
      await client.end();
    }
  }

  const unexpectedIn = (outcomes: readonly CallOutcome[]) =>
    outcomes
      .filter((o) => o.code !== status.OK && o.code !== status.UNAVAILABLE)
      .map((o) => `${codeName(o.code)}: ${o.details}`);

  it("F54 keeps the broker process running when its Postgres backends are terminated mid-transaction", async () => {
    const { user, databaseUrl } = await startChild();
    const running = child as BrokerChild;
    let exit: { code: number | null } | undefined;
    void running.exited.then((e) => {
      exit = e;
    });
    const acknowledged: string[] = [];
    load = startLoad(
      6,
      150,
      async (worker, i) => {
        const outcome = await user.put(`terminated-${worker}-${i}`, { deadlineMs: 5000 });
        if (outcome.code === status.OK) acknowledged.push(secretIdOf(outcome));
        return outcome;
      },
      () => exit !== undefined,
    );
    expect(await eventually(async () => acknowledged.length >= 10, 15_000, 20)).toBe(true);

    const databaseName = new URL(databaseUrl).pathname.slice(1);
    let terminated = 0;
    for (let round = 0; round < 4 && exit === undefined; round++) {
      terminated += await cluster.terminateBackends(databaseName);
      await delay(100);
    }
    await delay(500);
    const outcomes = await load.stop();

    expect(terminated).toBeGreaterThan(0);
    expect(exit, `the broker died:\n${running.output().split("\n").slice(-15).join("\n")}`).toBeUndefined();
    expect(unexpectedIn(outcomes)).toEqual([]);
    const after = await user.put("after-termination", { deadlineMs: 5000 });
    expect(codeName(after.code)).toBe("OK");
  });

  it("F56 on SIGTERM under load goes NOT_SERVING, finishes in-flight calls, refuses new ones, exits 0 within the grace period and loses no acknowledged write", async () => {
    const { user, databaseUrl } = await startChild();
    const running = child as BrokerChild;
    health = healthClient(running.grpcAddress);
    const seenHealth: string[] = [];
    const watch = serverStream(health, "Watch", { service: "" }, {}, (m: WireMessage) =>
      seenHealth.push(String(m.status)),
    ).then(
      () => "ended",
      () => "ended",
    );
    const stored = await user.put("proxied");
    expect(codeName(stored.code)).toBe("OK");
    const secretId = secretIdOf(stored);

    // Background writers, as a busy replica would have when the orchestrator stops it.
    const acknowledged: string[] = [];
    load = startLoad(4, 300, async (worker, i) => {
      const outcome = await user.put(`sigterm-${worker}-${i}`, { deadlineMs: 10_000 });
      if (outcome.code === status.OK) acknowledged.push(secretIdOf(outcome));
      else await delay(50);
      return outcome;
    });
    expect(await eventually(async () => acknowledged.length >= 10, 15_000, 20)).toBe(true);

    // Calls that will still be running when the signal arrives: they wait on a slow KMS (one
    // shared Decrypt: the data-key cache coalesces concurrent loads of the same key).
    deps.kms.setFaults({ latencyMs: KMS_LATENCY_MS });
    deps.kms.resetCounts();
    const inFlight = Array.from({ length: 4 }, () =>
      user.call(secretId, "GET", "/ok", { deadlineMs: 10_000 }),
    );
    expect(await eventually(async () => deps.kms.callCount("Decrypt") >= 1, 2000, 10)).toBe(true);
    await delay(100);

    const signalledAt = Date.now();
    running.kill("SIGTERM");

    const notReady = await eventually(
      async () => (await fetch(`${running.opsUrl}/readyz`)).status === 503,
      KMS_LATENCY_MS,
      20,
    );
    const lateClients = createGrpcClients(running.grpcAddress);
    const late = await userSession(lateClients, {
      callerKey: running.callerKey,
      token: await deps.issuer.sign({ sub: "google-oauth2|faults-process-late" }),
      secretValue: deps.upstreamCredentials.bearer,
    }).list({ deadlineMs: 3000 });
    lateClients.close();
    const finished = await Promise.all(inFlight);
    const exit = await Promise.race([running.exited, delay(GRACE_MS + 5000).then(() => undefined)]);
    const exitMs = Date.now() - signalledAt;
    const outcomes = await load.stop();
    await watch;

    expect(notReady).toBe(true);
    expect(seenHealth).toEqual(["SERVING", "NOT_SERVING"]);
    expect(codeName(late.code)).toBe("UNAVAILABLE");
    expect(finished.map((o) => codeName(o.code))).toEqual(["OK", "OK", "OK", "OK"]);
    expect(finished.map((o) => o.response?.status)).toEqual([200, 200, 200, 200]);
    expect(exit, running.output().split("\n").slice(-10).join("\n")).toEqual({ code: 0, signal: null });
    expect(exitMs).toBeLessThan(GRACE_MS);
    expect(unexpectedIn(outcomes)).toEqual([]);

    // Straight from the database after the process is gone: every acknowledged write is there,
    // with its version and its audit row (the trail was flushed before exit).
    const rows = await query<{ id: string; audited: boolean }>(
      databaseUrl,
      `select s.id,
              exists (select 1 from audit_events a
                       where a.action = 'secret.put' and a.outcome = 'ok' and a.target = s.id::text) as audited
         from secrets s
         join secret_versions v on v.secret_id = s.id and v.version = s.current_version
        where s.id = any($1::uuid[])`,
      [acknowledged],
    );
    expect(rows.map((r) => r.id).sort()).toEqual([...acknowledged].sort());
    expect(rows.filter((r) => !r.audited)).toEqual([]);
    expect(findLeaks(running.output(), [deps.upstreamCredentials.bearer])).toEqual([]);
  });
});
