import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyService } from "../../src/gen/keybroker/v1/proxy_pb.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { asServiceError, unary, type WireMessage } from "../support/grpc-client.js";

const MIB = 1024 * 1024;

/**
 * F3: a provider accepts request bodies up to its maxRequestBytes (1 MiB unless it says more), so
 * each transport must let such a body through with its request around it. The receive cap used
 * to be a fixed 1 MiB, which refused a body of exactly 1 MiB.
 */
describe("request bodies as large as a provider accepts", () => {
  let broker: BrokerHarness;
  let appKey: string;
  let token: string;
  let secretId: string;

  beforeAll(async () => {
    broker = await startBroker("pglite");
    appKey = (await broker.callerKey(["secrets:write", "proxy:call"])).key;
    token = await broker.tokenFor("auth0|request-size-e2e");
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      {
        provider: "test-upstream",
        label: "big bodies",
        fields: { token: broker.upstreamCredentials.bearer },
      },
      { callerKey: appKey, bearerToken: token },
    );
    secretId = (response.secret as WireMessage).id as string;
  });

  afterAll(async () => {
    await broker?.close();
  });

  const lastUpstreamBodyLength = () => broker.upstream.requests.at(-1)?.body.length;

  it("G73 F3: proxies a body of exactly 1 MiB over the grpc-js port", async () => {
    broker.upstream.reset();
    const { response } = await unary(
      broker.clients.proxy,
      "Call",
      { secretId, method: "POST", path: "/ok", body: Buffer.alloc(MIB, 0x61) },
      { callerKey: appKey, bearerToken: token },
    );
    expect(response.status).toBe(200);
    expect(lastUpstreamBodyLength()).toBe(MIB);
  });

  it("G73 F3: proxies a body of exactly 1 MiB over the Connect port", async () => {
    broker.upstream.reset();
    const proxy = createClient(
      ProxyService,
      createConnectTransport({ baseUrl: broker.connectUrl, httpVersion: "1.1" }),
    );
    const response = await proxy.call(
      { secretId, method: "POST", path: "/ok", body: new Uint8Array(MIB).fill(0x61) },
      { headers: { "x-keybroker-key": appKey, authorization: `Bearer ${token}` } },
    );
    expect(response.status).toBe(200);
    expect(lastUpstreamBodyLength()).toBe(MIB);
  });

  it("G73 F3: leaves one byte more to the provider's own limit (INVALID_ARGUMENT), not the transport's", async () => {
    broker.upstream.reset();
    const err = await unary(
      broker.clients.proxy,
      "Call",
      { secretId, method: "POST", path: "/ok", body: Buffer.alloc(MIB + 1, 0x61) },
      { callerKey: appKey, bearerToken: token },
    ).then(
      () => undefined,
      (e: unknown) => asServiceError(e),
    );
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(/too large/);
    expect(broker.upstream.requests).toEqual([]);
  });
});
