import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { shippedAuth } from "../integration/outbound/upstream-fixture.js";
import { createGrpcClients, type GrpcClients, unary, type WireMessage } from "../support/grpc-client.js";
import { loopbackProvider } from "../support/loopback-providers.js";
import { POSTGRES_SKIP_REASON } from "../support/skip-reasons.js";
import { createTestDatabase, type TestDatabase } from "../support/test-database.js";
import {
  type BrokerChild,
  type BrokerDependencies,
  spawnBroker,
  startBrokerDependencies,
} from "./fault-fixture.js";

// F1 across replicas: two `keybroker serve` processes on one Postgres share one Kraken key. The
// upstream refuses any nonce not above the last it accepted, so both processes must draw their
// nonces from one counter AND send in that counter's order (the row lock in
// outbound-nonces.repository.ts); per-process counters interleave out of order.

const missing = !process.env.TEST_DATABASE_URL;

describe.skipIf(missing)(
  missing ? `F1 two broker processes (${POSTGRES_SKIP_REASON})` : "F1 two broker processes",
  () => {
    let deps: BrokerDependencies;
    let database: TestDatabase;
    const brokers: BrokerChild[] = [];
    const clients: GrpcClients[] = [];

    beforeAll(async () => {
      deps = await startBrokerDependencies();
      database = await createTestDatabase("postgres");
      const providersFile = join(tmpdir(), `keybroker-nonce-replicas-${process.pid}.json`);
      const kraken = loopbackProvider({
        id: "kraken-replicas",
        port: deps.upstream.port,
        path: "/kraken",
        requiredFields: ["api_key", "api_secret"],
        auth: shippedAuth("kraken"),
        timeoutMs: 30_000,
      });
      await writeFile(
        providersFile,
        JSON.stringify({ providers: [{ ...(kraken as object), allowedMethods: ["POST"] }] }),
      );
      const url = database.url ?? "";
      // One after the other: both run the migrator on start-up.
      for (let i = 0; i < 2; i++) {
        const child = await spawnBroker(deps, url, { KEYBROKER_PROVIDERS_FILE: providersFile });
        brokers.push(child);
        clients.push(createGrpcClients(child.grpcAddress));
      }
    }, 180_000);

    afterAll(async () => {
      for (const c of clients) c.close();
      await Promise.all(brokers.map((b) => b.close()));
      await database?.close();
      await deps?.close();
    });

    it("F1 accepts all of 2 × 12 concurrent Kraken calls from two broker processes on one Postgres", {
      timeout: 60_000,
    }, async () => {
      const [a, b] = brokers;
      const [ca, cb] = clients;
      if (a === undefined || b === undefined || ca === undefined || cb === undefined)
        throw new Error("no brokers");
      const token = await deps.issuer.sign({ sub: "google-oauth2|nonce-replicas" });
      const creds = deps.upstreamCredentials;
      const { response } = await unary(
        ca.secrets,
        "PutSecret",
        {
          provider: "kraken-replicas",
          label: "kraken",
          fields: { api_key: creds.krakenKey, api_secret: creds.krakenSecret },
        },
        { callerKey: a.callerKey, bearerToken: token },
      );
      const secretId = (response.secret as WireMessage).id as string;
      deps.upstream.reset();

      const call = (client: GrpcClients, callerKey: string) =>
        unary(
          client.proxy,
          "Call",
          { secretId, method: "POST", path: "/0/private/nonce-strict" },
          { callerKey, bearerToken: token },
        );
      const results = await Promise.all([
        ...Array.from({ length: 12 }, () => call(ca, a.callerKey)),
        ...Array.from({ length: 12 }, () => call(cb, b.callerKey)),
      ]);
      const errors = results.map(
        (r) =>
          (JSON.parse(Buffer.from(r.response.body as Uint8Array).toString()) as { error: string[] }).error,
      );
      expect(errors.filter((e) => e.length > 0)).toEqual([]);
      const arrived = deps.upstream.krakenNonces.map(BigInt);
      expect(arrived).toHaveLength(24);
      for (let i = 1; i < arrived.length; i++) expect((arrived[i] ?? 0n) > (arrived[i - 1] ?? 0n)).toBe(true);
    });
  },
);
