import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { unary, type WireMessage } from "../support/grpc-client.js";

const USER = "auth0|metrics-canary-user";

describe("metrics and probes of a running broker", () => {
  let broker: BrokerHarness;
  let key: string;
  let token: string;
  let secretId: string;

  beforeAll(async () => {
    broker = await startBroker("pglite");
    key = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    token = await broker.tokenFor(USER);
    const put = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "m", fields: { token: broker.upstreamCredentials.bearer } },
      { callerKey: key, bearerToken: token },
    );
    secretId = (put.response.secret as WireMessage).id as string;
    for (let i = 0; i < 3; i++) {
      await unary(
        broker.clients.proxy,
        "Call",
        { secretId, method: "GET", path: "/ok" },
        { callerKey: key, bearerToken: token },
      );
    }
    await unary(
      broker.clients.secrets,
      "ListSecrets",
      {},
      { callerKey: "kbk_bad", bearerToken: token },
    ).catch(() => undefined);
  });

  afterAll(async () => {
    await broker.close();
  });

  it("counts RPCs by method and code, KMS calls, upstream calls by provider, and the data-key cache", async () => {
    const text = await (await fetch(`${broker.opsUrl}/metrics`)).text();
    expect(text).toMatch(
      /keybroker_rpc_requests_total\{service="keybroker.v1.ProxyService",method="Call",code="OK"\} 3/,
    );
    expect(text).toMatch(
      /keybroker_rpc_requests_total\{service="keybroker.v1.SecretService",method="ListSecrets",code="UNAUTHENTICATED"\} 1/,
    );
    expect(text).toMatch(/keybroker_kms_requests_total\{op="generate_data_key",outcome="ok"\} \d+/);
    expect(text).toMatch(
      /keybroker_upstream_requests_total\{provider="test-upstream",status_class="2xx"[^}]*\} 3/,
    );
    expect(text).toMatch(/keybroker_data_key_cache_hits_total \d+/);
  });

  it("I7 exposes no secret, token, caller key, secret id or user id in any metric", async () => {
    const text = await (await fetch(`${broker.opsUrl}/metrics`)).text();
    expect(findLeaks(text, [broker.upstreamCredentials.bearer, token, key, secretId, USER])).toEqual([]);
  });

  it("answers liveness and readiness separately", async () => {
    expect((await fetch(`${broker.opsUrl}/livez`)).status).toBe(200);
    const ready = await fetch(`${broker.opsUrl}/readyz`);
    expect(ready.status).toBe(200);
  });
});
