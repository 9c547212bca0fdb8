import { spawn } from "node:child_process";
import { join } from "node:path";
import { setTimeout as delay } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type BrokerChild,
  type BrokerDependencies,
  type CallOutcome,
  eventually,
  secretIdOf,
  spawnBroker,
  startBrokerDependencies,
  tally,
  type UserSession,
  userSession,
} from "../faults/fault-fixture.js";
import { createGrpcClients, type GrpcClients } from "../support/grpc-client.js";
import { POSTGRES_SKIP_REASON } from "../support/skip-reasons.js";
import { createThrowawayDatabase } from "../support/throwaway-database.js";

// Issue 17 item 3, with real processes on 127.0.0.1: `keybroker serve --workers 2` (node:cluster)
// on one Postgres. Each grpc-js client below gets its own TCP connection, and the cluster primary
// hands connections to the workers in turn, so a handful of clients lands on both workers.

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const ADMIN_URL = process.env.TEST_DATABASE_URL;
const missing = !ADMIN_URL;
const CONNECTIONS = 6;

/** Pids of the workers that logged "worker serving", in order. */
function servingPids(output: string): number[] {
  return [...output.matchAll(/"pid":(\d+)[^\n]*"msg":"worker serving"/g)].map((m) => Number(m[1]));
}

describe.skipIf(missing)(
  missing ? `serve --workers 2 (${POSTGRES_SKIP_REASON})` : "serve --workers 2",
  () => {
    let deps: BrokerDependencies;
    let database: { url: string; drop(): Promise<void> };
    let broker: BrokerChild;
    const clients: GrpcClients[] = [];

    beforeAll(async () => {
      deps = await startBrokerDependencies();
      database = await createThrowawayDatabase(ADMIN_URL ?? "", "keybroker_workers");
      broker = await spawnBroker(deps, database.url, { KEYBROKER_SHUTDOWN_GRACE_MS: "8000" }, [
        "--workers",
        "2",
      ]);
    }, 300_000);

    afterAll(async () => {
      for (const c of clients) c.close();
      await broker?.close();
      await database?.drop();
      await deps?.close();
    });

    /** A user session on its own TCP connection (grpc-js shares channels unless told not to). */
    async function sessionsOnOwnConnections(sub: string, count: number): Promise<UserSession[]> {
      const token = await deps.issuer.sign({ sub });
      return Array.from({ length: count }, (_, i) => {
        const own = createGrpcClients(broker.grpcAddress, broker.grpcAddress, {
          "grpc.use_local_subchannel_pool": 1,
          "test.connection": i,
        });
        clients.push(own);
        return userSession(own, {
          callerKey: broker.callerKey,
          token,
          secretValue: deps.upstreamCredentials.bearer,
        });
      });
    }

    it("L279 starts two workers behind one gRPC port and sums their metrics on one endpoint", async () => {
      expect(new Set(servingPids(broker.output())).size).toBe(2);
      const sessions = await sessionsOnOwnConnections("google-oauth2|workers-metrics", CONNECTIONS);
      const outcomes = await Promise.all(sessions.map((s) => s.list()));
      expect(tally(outcomes)).toEqual({ OK: CONNECTIONS });

      const text = await (await fetch(`${broker.opsUrl}/metrics`)).text();
      expect(text).toMatch(/^keybroker_workers_serving 2$/m);
      const listed =
        /keybroker_rpc_requests_total\{[^}]*method="ListSecrets"[^}]*code="OK"[^}]*\} (\d+)/.exec(text);
      // Summed over both workers: every call counted once, whichever worker served it.
      expect(Number(listed?.[1])).toBe(CONNECTIONS);
      expect((await fetch(`${broker.opsUrl}/readyz`)).status).toBe(200);
    });

    it("L280 a worker killed mid-load is restarted, and the other worker's calls in flight complete", async () => {
      const sessions = await sessionsOnOwnConnections("google-oauth2|workers-crash", CONNECTIONS);
      const secretId = secretIdOf(await (sessions[0] as UserSession).put("workers crash"));
      deps.upstream.reset();
      const inFlight = sessions.map((s) => s.call(secretId, "GET", "/slow-ok", { deadlineMs: 20_000 }));
      expect(await eventually(async () => deps.upstream.requests.length >= CONNECTIONS, 20_000, 20)).toBe(
        true,
      );

      const victim = servingPids(broker.output())[0] as number;
      process.kill(victim, "SIGKILL");
      const outcomes: CallOutcome[] = await Promise.all(inFlight);

      const counts = tally(outcomes);
      // The survivor's calls finished normally; only the killed worker's connections broke.
      expect(counts.OK ?? 0, JSON.stringify(counts)).toBeGreaterThanOrEqual(1);
      expect(counts.OK ?? 0, JSON.stringify(counts)).toBeLessThan(CONNECTIONS);
      // The killed worker's connections break (how grpc-js words a dropped connection varies); no call hangs.
      const broken = [status.UNAVAILABLE, status.INTERNAL, status.CANCELLED, status.DEADLINE_EXCEEDED];
      for (const o of outcomes) expect([status.OK, ...broken], JSON.stringify(counts)).toContain(o.code);

      // The primary forks a replacement, and new connections are served by both again.
      expect(await eventually(async () => servingPids(broker.output()).length >= 3, 60_000, 100)).toBe(true);
      expect(broker.output()).toMatch(/"msg":"a worker died; restarting it"/);
      const fresh = await sessionsOnOwnConnections("google-oauth2|workers-crash", CONNECTIONS);
      expect(tally(await Promise.all(fresh.map((s) => s.list())))).toEqual({ OK: CONNECTIONS });
    });

    it("L281 on SIGTERM every worker drains: calls in flight on both complete, then the process exits 0", async () => {
      const sessions = await sessionsOnOwnConnections("google-oauth2|workers-drain", CONNECTIONS);
      const secretId = secretIdOf(await (sessions[0] as UserSession).put("workers drain"));
      deps.upstream.reset();
      const inFlight = sessions.map((s) => s.call(secretId, "GET", "/slow-ok", { deadlineMs: 20_000 }));
      expect(await eventually(async () => deps.upstream.requests.length >= CONNECTIONS, 20_000, 20)).toBe(
        true,
      );

      broker.kill("SIGTERM");

      expect(tally(await Promise.all(inFlight))).toEqual({ OK: CONNECTIONS });
      expect(await broker.exited).toEqual({ code: 0, signal: null });
      expect(broker.output()).toMatch(/"msg":"keybroker stopped"/);
    });
  },
);

describe.skipIf(missing)(
  missing
    ? `serve --workers 2 that cannot start (${POSTGRES_SKIP_REASON})`
    : "serve --workers 2 that cannot start",
  () => {
    it("L282 reports workers that fail to start, backs off, gives up after a few tries and exits 1: no crash loop", async () => {
      const deps = await startBrokerDependencies();
      // A database never migrated: every worker refuses to start on it.
      const database = await createThrowawayDatabase(ADMIN_URL ?? "", "keybroker_workers_unmigrated");
      try {
        const child = spawn(
          process.execPath,
          ["--import", "tsx", join(ROOT, "src/cli/main.ts"), "serve", "--workers", "2"],
          {
            cwd: ROOT,
            env: { PATH: process.env.PATH ?? "", TZ: "UTC", ...deps.env, DATABASE_URL: database.url },
            stdio: ["ignore", "pipe", "pipe"],
          },
        );
        let out = "";
        child.stdout?.on("data", (chunk: Buffer) => {
          out += chunk.toString();
        });
        child.stderr?.on("data", (chunk: Buffer) => {
          out += chunk.toString();
        });
        const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
        const code = await Promise.race([exited, delay(240_000).then(() => "timeout" as const)]);
        if (code === "timeout") child.kill("SIGKILL");

        expect(code, out.slice(-4_000)).toBe(1);
        expect(out).toMatch(/"msg":"worker failed to start"/);
        expect(out).toMatch(/"msg":"a worker failed to start; retrying"/);
        expect(out).toMatch(/"msg":"a worker failed to start again and again; giving up/);
        // Bounded: three tries for the slot that gave up, at most that many for the other.
        const tries = (out.match(/"msg":"worker failed to start"/g) ?? []).length;
        expect(tries, out.slice(-4_000)).toBeGreaterThanOrEqual(3);
        expect(tries).toBeLessThanOrEqual(6);
        expect(out).not.toMatch(/"msg":"keybroker serving"/);
      } finally {
        await database.drop();
        await deps.close();
      }
    }, 300_000);
  },
);
