import { setTimeout as delay } from "node:timers/promises";
import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createKeybrokerClient,
  type KeybrokerClient,
  ResourceExhaustedError,
} from "../../client/keybroker-client.js";
import { retryDelayFromStatusDetails } from "../../src/api/error-info.js";
import { RetryInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { ProxyService } from "../../src/gen/keybroker/v1/proxy_pb.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { asServiceError, unary } from "../support/grpc-client.js";

// The environment's per-secret default (KEYBROKER_RATE_LIMIT_PER_SECRET_PER_MINUTE) applies to
// the test provider, which declares no limit of its own. A refusal says when to retry with a
// standard google.rpc.RetryInfo detail, on the grpc-js port and on the Connect port alike.

const LIMIT = 3;
const MINUTE_MS = 60_000;

describe("rate limits at the edge", () => {
  let broker: BrokerHarness;
  let client: KeybrokerClient;
  let callerKey: string;
  let token: string;
  let secretId: string;

  beforeAll(async () => {
    broker = await startBroker("pglite", { KEYBROKER_RATE_LIMIT_PER_SECRET_PER_MINUTE: String(LIMIT) });
    callerKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    token = await broker.tokenFor("google-oauth2|rate-limit-edge");
    client = createKeybrokerClient({ address: broker.grpcAddress, callerKey });
    secretId = (
      await client.putSecret(token, {
        provider: "test-upstream",
        label: "limited",
        fields: { token: broker.upstreamCredentials.bearer },
      })
    ).id;
    // Fixed windows are per wall-clock minute: start well inside one, so every test shares it.
    const intoMinute = Date.now() % MINUTE_MS;
    if (intoMinute > 40_000) await delay(MINUTE_MS - intoMinute + 500);
    for (let i = 0; i < LIMIT; i++) await client.call(token, { secretId, method: "GET", path: "/ok" });
  }, 180_000);

  afterAll(async () => {
    client?.close();
    await broker?.close();
  });

  it("H110 grpc-js: RESOURCE_EXHAUSTED with a google.rpc.RetryInfo delay within the window", async () => {
    const err = asServiceError(
      await unary(
        broker.clients.proxy,
        "Call",
        { secretId, method: "GET", path: "/ok" },
        { callerKey, bearerToken: token },
      ).then(
        () => undefined,
        (e: unknown) => e,
      ),
    );
    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(err.details).toBe("rate limit reached for this secret; retry later");
    const bin = err.metadata.get("grpc-status-details-bin")[0];
    const delay = bin instanceof Buffer ? retryDelayFromStatusDetails(bin) : undefined;
    expect(delay).toBeGreaterThan(0);
    expect(delay).toBeLessThanOrEqual(MINUTE_MS);
  });

  it("H110 Connect: the same refusal carries the RetryInfo detail", async () => {
    const proxy = createClient(
      ProxyService,
      createConnectTransport({ baseUrl: broker.connectUrl, httpVersion: "1.1" }),
    );
    const err = await proxy
      .call(
        { secretId, method: "GET", path: "/ok" },
        { headers: { "x-keybroker-key": callerKey, authorization: `Bearer ${token}` } },
      )
      .then(
        () => undefined,
        (e: unknown) => ConnectError.from(e),
      );
    expect(err?.code).toBe(status.RESOURCE_EXHAUSTED);
    const [info] = err?.findDetails(RetryInfoSchema) ?? [];
    const ms = Number(info?.retryDelay?.seconds ?? -1n) * 1000 + (info?.retryDelay?.nanos ?? 0) / 1e6;
    expect(ms).toBeGreaterThan(0);
    expect(ms).toBeLessThanOrEqual(MINUTE_MS);
  });

  it("H110 the client's ResourceExhaustedError exposes retryAfterMs from the detail", async () => {
    const err = await client.call(token, { secretId, method: "GET", path: "/ok" }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ResourceExhaustedError);
    const retryAfterMs = (err as ResourceExhaustedError).retryAfterMs;
    expect(retryAfterMs).toBeGreaterThan(0);
    expect(retryAfterMs).toBeLessThanOrEqual(MINUTE_MS);
  });

  it("H110 a refused call never reaches the upstream and is audited as resource_exhausted", async () => {
    broker.upstream.reset();
    await client.call(token, { secretId, method: "GET", path: "/ok" }).catch(() => undefined);
    expect(broker.upstream.requests).toHaveLength(0);
    await broker.app.flushAudit();
    const rows = await broker.database.db
      .selectFrom("audit_events")
      .select(["outcome", "code"])
      .where("action", "=", "proxy.call")
      .where("target", "=", secretId)
      .where("code", "=", "resource_exhausted")
      .execute();
    expect(rows.length).toBeGreaterThanOrEqual(1);
    expect(rows.every((r) => r.outcome === "error")).toBe(true);
  });
});
