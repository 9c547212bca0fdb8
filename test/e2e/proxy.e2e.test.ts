import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { asServiceError, serverStream, unary, type WireMessage } from "../support/grpc-client.js";
import { describeOnEachDatabase } from "../support/test-database.js";

const USER = "google-oauth2|proxy-e2e-canary-user";

describeOnEachDatabase("ProxyService end to end over grpc-js on %s", (kind) => {
  let broker: BrokerHarness;
  let appKey: string;
  let token: string;
  let binanceId: string;
  let bearerId: string;
  const seen: string[] = [];

  beforeAll(async () => {
    broker = await startBroker(kind);
    appKey = (await broker.callerKey(["secrets:write", "proxy:call"])).key;
    token = await broker.tokenFor(USER);
    const creds = broker.upstreamCredentials;
    const put = async (provider: string, label: string, fields: Record<string, string>) => {
      const { response } = await unary(
        broker.clients.secrets,
        "PutSecret",
        { provider, label, fields },
        { callerKey: appKey, bearerToken: token },
      );
      return (response.secret as WireMessage).id as string;
    };
    binanceId = await put("test-binance", "exchange", {
      api_key: creds.binanceKey,
      api_secret: creds.binanceSecret,
    });
    bearerId = await put("test-upstream", "saas", { token: creds.bearer });
  });

  afterAll(async () => {
    await broker.close();
    const c = broker.upstreamCredentials;
    const secrets = [c.binanceKey, c.binanceSecret, c.bearer];
    // The plaintext went to the upstream on the wire and nowhere else: not to a response, not to a log.
    expect(findLeaks(seen.join("\n"), secrets)).toEqual([]);
    expect(findLeaks(broker.logs.text(), [...secrets, USER, token, appKey])).toEqual([]);
  });

  const call = async (request: WireMessage) => {
    const { response } = await unary(broker.clients.proxy, "Call", request, {
      callerKey: appKey,
      bearerToken: token,
    });
    seen.push(JSON.stringify(response), Buffer.from(response.body as Uint8Array).toString("latin1"));
    return response;
  };

  it("signs a Binance-style request with the stored key pair and the upstream accepts it", async () => {
    broker.upstream.reset();
    const response = await call({
      secretId: binanceId,
      method: "GET",
      path: "/api/v3/ok",
      query: [
        { name: "symbol", value: "LTCBTC" },
        { name: "recvWindow", value: "5000" },
      ],
    });
    expect(response.status).toBe(200);
    const [request] = broker.upstream.requests;
    expect(request?.url).toMatch(
      /^\/binance\/api\/v3\/ok\?symbol=LTCBTC&recvWindow=5000&timestamp=\d+&signature=[0-9a-f]{64}$/,
    );
    expect(request?.headers["x-mbx-apikey"]).toBe(broker.upstreamCredentials.binanceKey);
  });

  it("scrubs the key from a response that echoes it, in every encoding", async () => {
    const response = await call({ secretId: bearerId, method: "GET", path: "/echo" });
    expect(response.status).toBe(200);
    const body = Buffer.from(response.body as Uint8Array).toString("utf8");
    expect(body).toContain("[REDACTED]");
    expect(findLeaks(body + JSON.stringify(response.headers), [broker.upstreamCredentials.bearer])).toEqual(
      [],
    );
  });

  it("returns a redirect to the metadata address without following it", async () => {
    broker.upstream.reset();
    const response = await call({ secretId: bearerId, method: "GET", path: "/redirect-metadata" });
    expect(response.status).toBe(302);
    expect(broker.upstream.requests).toHaveLength(1);
  });

  it("keeps the caller inside the provider's base path", async () => {
    broker.upstream.reset();
    for (const path of [
      "/../binance/api/v3/ok",
      "//evil.example/x",
      "/%2e%2e/admin",
      "https://evil.example/",
    ]) {
      const err = await call({ secretId: bearerId, method: "GET", path }).then(
        () => undefined,
        (e: unknown) => asServiceError(e),
      );
      expect(err?.code, path).toBe(status.INVALID_ARGUMENT);
    }
    expect(broker.upstream.requests).toHaveLength(0);
  });

  it("refuses a caller Authorization header that would override the credential", async () => {
    const err = await call({
      secretId: bearerId,
      method: "GET",
      path: "/ok",
      headers: [{ name: "Authorization", value: "Bearer attacker" }],
    }).then(
      () => undefined,
      (e: unknown) => asServiceError(e),
    );
    expect(err?.code).toBe(status.INVALID_ARGUMENT);
  });

  it("streams a response as a head and then body chunks", async () => {
    const { messages } = await serverStream(
      broker.clients.proxy,
      "CallStream",
      { secretId: bearerId, method: "GET", path: "/echo-chunked" },
      { callerKey: appKey, bearerToken: token },
    );
    const [head, ...chunks] = messages;
    expect((head?.head as WireMessage | undefined)?.status).toBe(200);
    const body = Buffer.concat(chunks.map((m) => Buffer.from(m.chunk as Uint8Array))).toString("utf8");
    seen.push(body);
    expect(body).toMatch(/^start \[REDACTED\] middle \[REDACTED\] end$/);
  });

  it("answers DEADLINE_EXCEEDED when the upstream hangs past the client's deadline", async () => {
    const err = await unary(
      broker.clients.proxy,
      "Call",
      { secretId: bearerId, method: "GET", path: "/hang" },
      { callerKey: appKey, bearerToken: token, deadlineMs: 300 },
    ).then(
      () => undefined,
      (e: unknown) => asServiceError(e),
    );
    expect(err?.code).toBe(status.DEADLINE_EXCEEDED);
  });

  it("answers RESOURCE_EXHAUSTED for a body over the provider's limit, logged under the call's request id", async () => {
    const err = await call({ secretId: bearerId, method: "GET", path: "/huge" }).then(
      () => undefined,
      (e: unknown) => asServiceError(e),
    );
    expect(err?.code).toBe(status.RESOURCE_EXHAUSTED);
    const requestId = err?.metadata.get("x-request-id")[0];
    expect(requestId).toBeTruthy();
    const outboundLine = broker.logs.lines.find(
      (line) => line.includes('"msg":"outbound call failed"') && line.includes(String(requestId)),
    );
    expect(outboundLine).toBeDefined();
  });

  it("records when a secret was last used", async () => {
    await call({ secretId: bearerId, method: "GET", path: "/ok" });
    const reader = (await broker.callerKey(["secrets:read"])).key;
    // The use is recorded off the request path: poll briefly (bounded) instead of racing it.
    let lastUsedAt: unknown;
    for (let attempt = 0; attempt < 20 && !lastUsedAt; attempt++) {
      const { response } = await unary(
        broker.clients.secrets,
        "ListSecrets",
        {},
        { callerKey: reader, bearerToken: token },
      );
      lastUsedAt = (response.secrets as WireMessage[]).find((s) => s.id === bearerId)?.lastUsedAt;
      if (!lastUsedAt) await new Promise((resolve) => setTimeout(resolve, 50));
    }
    expect(lastUsedAt).toBeTruthy();
  });
  it("L265 a proxied call with a revoked caller key is refused on the very next call, nothing sent upstream (B20 with the key's parts cached)", async () => {
    const second = await broker.callerKey(["proxy:call"]);
    const request = { secretId: bearerId, method: "GET", path: "/ok" };
    const auth = { callerKey: second.key, bearerToken: token };
    // Twice: the second call is served from the cached key, checked only by its started row.
    expect((await unary(broker.clients.proxy, "Call", request, auth)).response.status).toBe(200);
    expect((await unary(broker.clients.proxy, "Call", request, auth)).response.status).toBe(200);
    await broker.revokeCallerKey(second.id);
    broker.upstream.reset();
    const err = await unary(broker.clients.proxy, "Call", request, auth).then(
      () => undefined,
      (e: { code?: number; details?: string }) => e,
    );
    expect(err?.code).toBe(16);
    expect(err?.details).toBe("invalid caller key");
    expect(broker.upstream.requests).toEqual([]);
  });
});
