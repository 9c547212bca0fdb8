import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { asServiceError, serverStream, unary, type WireMessage } from "../support/grpc-client.js";
import { BINANCE_READ_ONLY } from "../support/https-upstream.js";
import { describeOnEachDatabase } from "../support/test-database.js";

const USER = "google-oauth2|key-inspection-e2e-user";

describeOnEachDatabase("key inspection and response redaction end to end on %s", (kind) => {
  let broker: BrokerHarness;
  let appKey: string;
  let token: string;
  const seen: string[] = [];

  beforeAll(async () => {
    broker = await startBroker(kind, { KEYBROKER_INSPECTION_RELAX: "test-binance-relaxed" });
    appKey = (await broker.callerKey(["secrets:write", "secrets:read", "proxy:call"])).key;
    token = await broker.tokenFor(USER);
  });

  beforeEach(() => {
    broker.upstream.binanceRestrictions = BINANCE_READ_ONLY;
    broker.upstream.reset();
  });

  afterAll(async () => {
    await broker.close();
    const c = broker.upstreamCredentials;
    const secrets = [c.binanceKey, c.binanceSecret, c.fbToken, c.fbAppSecret, ...broker.upstream.pageTokens];
    expect(findLeaks(seen.join("\n"), secrets)).toEqual([]);
    expect(findLeaks(broker.logs.text(), [...secrets, USER, token, appKey])).toEqual([]);
  });

  const auth = () => ({ callerKey: appKey, bearerToken: token });
  const putBinance = async (provider: string, label: string) => {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      {
        provider,
        label,
        fields: {
          api_key: broker.upstreamCredentials.binanceKey,
          api_secret: broker.upstreamCredentials.binanceSecret,
        },
      },
      auth(),
    );
    seen.push(JSON.stringify(response));
    return response.secret as WireMessage;
  };
  const failureOf = async (promise: Promise<unknown>) => {
    try {
      await promise;
    } catch (err) {
      const e = asServiceError(err);
      seen.push(e.details);
      return e;
    }
    throw new Error("expected the call to fail");
  };
  const listed = async (provider: string) => {
    const { response } = await unary(broker.clients.secrets, "ListSecrets", { provider }, auth());
    seen.push(JSON.stringify(response));
    return response.secrets as WireMessage[];
  };
  const auditDetails = async (action: string) => {
    await broker.app.flushAudit();
    const rows = await broker.database.db
      .selectFrom("audit_events")
      .select(["outcome", "code", "detail"])
      .where("action", "=", action)
      .orderBy("seq")
      .execute();
    return rows.map((r) => ({
      outcome: r.outcome,
      code: r.code,
      detail: r.detail as Record<string, unknown>,
    }));
  };
  const inspectionRequests = () =>
    broker.upstream.requests.filter((r) => r.url.startsWith("/binance/sapi/v1/account/apiRestrictions?"));

  it("H100 refuses at PutSecret a key whose apiRestrictions report withdrawals enabled, naming the permission, and stores nothing", async () => {
    broker.upstream.binanceRestrictions = { ...BINANCE_READ_ONLY, enableWithdrawals: true };
    const err = await failureOf(putBinance("test-binance-inspected", "can-withdraw"));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toBe("this key can withdraw funds; create one without withdrawal rights");
    // The question went to the provider, signed with the new key (the fake verifies the HMAC).
    const [request] = inspectionRequests();
    expect(request?.headers["x-mbx-apikey"]).toBe(broker.upstreamCredentials.binanceKey);
    expect(request?.url).toMatch(
      /^\/binance\/sapi\/v1\/account\/apiRestrictions\?timestamp=\d+&signature=[0-9a-f]{64}$/,
    );
    expect(await listed("test-binance-inspected")).toEqual([]);
    const rows = await auditDetails("secret.put");
    expect(rows.at(-1)).toMatchObject({ outcome: "error", code: "failed_precondition" });
  });

  it("H100 names every dangerous permission a refused key has", async () => {
    broker.upstream.binanceRestrictions = {
      ...BINANCE_READ_ONLY,
      enableWithdrawals: true,
      enableInternalTransfer: true,
    };
    const err = await failureOf(putBinance("test-binance-inspected", "can-move"));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain("withdraw funds");
    expect(err.details).toContain("internal transfer");
  });

  it("H101 stores a key without withdrawal rights and shows its permissions in ListSecrets", async () => {
    const stored = await putBinance("test-binance-inspected", "read-trade");
    expect(stored.inspection).toMatchObject({
      verdict: "ok",
      permissions: ["read", "spot-trade"],
      dangerousPermissions: [],
    });
    const [secret] = await listed("test-binance-inspected");
    expect(secret?.id).toBe(stored.id);
    const inspection = secret?.inspection as WireMessage;
    expect(inspection).toMatchObject({ verdict: "ok", permissions: ["read", "spot-trade"] });
    expect(Number((inspection.checkedAt as { seconds: string }).seconds)).toBeGreaterThan(0);
    const rows = await auditDetails("secret.put");
    expect(rows.at(-1)).toMatchObject({
      outcome: "ok",
      detail: { inspection: "ok", permissions: "read,spot-trade" },
    });
  });

  it("H102 stores the key of a relaxed provider with a warning, audited with the dangerous permission", async () => {
    broker.upstream.binanceRestrictions = { ...BINANCE_READ_ONLY, enableWithdrawals: true };
    const stored = await putBinance("test-binance-relaxed", "relaxed");
    expect(stored.inspection).toMatchObject({
      verdict: "warned",
      permissions: ["read", "spot-trade", "withdraw"],
      dangerousPermissions: ["withdraw"],
    });
    const [secret] = await listed("test-binance-relaxed");
    expect((secret?.inspection as WireMessage | undefined)?.verdict).toBe("warned");
    const rows = await auditDetails("secret.put");
    expect(rows.at(-1)).toMatchObject({
      outcome: "ok",
      detail: { inspection: "warned", dangerousPermissions: "withdraw" },
    });
    expect(broker.logs.text()).toContain("key stored with dangerous permissions");
  });

  it("H103 answers UNAVAILABLE and stores nothing when the provider cannot be reached", async () => {
    const down = await failureOf(putBinance("test-binance-down", "down"));
    expect(down.code).toBe(status.UNAVAILABLE);
    expect(down.details).toContain("try again");
    expect(await listed("test-binance-down")).toEqual([]);

    broker.upstream.binanceRestrictions = "reset";
    const reset = await failureOf(putBinance("test-binance-inspected", "reset"));
    expect(reset.code).toBe(status.UNAVAILABLE);
    broker.upstream.binanceRestrictions = 503;
    expect((await failureOf(putBinance("test-binance-inspected", "busy"))).code).toBe(status.UNAVAILABLE);
    expect((await listed("test-binance-inspected")).map((s) => s.label)).not.toContain("reset");
  });

  it("H103 refuses a key the provider rejects (HTTP 401) as FAILED_PRECONDITION", async () => {
    broker.upstream.binanceRestrictions = 401;
    const err = await failureOf(putBinance("test-binance-inspected", "rejected"));
    expect(err.code).toBe(status.FAILED_PRECONDITION);
    expect(err.details).toContain("HTTP 401");
  });

  it("H104 InspectSecret re-runs the inspection with the stored key and records what it finds", async () => {
    const stored = await putBinance("test-binance-inspected", "re-inspected");
    broker.upstream.binanceRestrictions = { ...BINANCE_READ_ONLY, permitsUniversalTransfer: true };
    broker.upstream.reset();
    const { response } = await unary(
      broker.clients.secrets,
      "InspectSecret",
      { secretId: stored.id },
      auth(),
    );
    seen.push(JSON.stringify(response));
    expect(inspectionRequests()).toHaveLength(1);
    expect((response.secret as WireMessage).inspection).toMatchObject({
      verdict: "refused",
      dangerousPermissions: ["universal-transfer"],
    });
    const secret = (await listed("test-binance-inspected")).find((s) => s.id === stored.id);
    expect((secret?.inspection as WireMessage | undefined)?.verdict).toBe("refused");
    const rows = await auditDetails("secret.inspect");
    expect(rows.map((r) => r.outcome)).toEqual(["started", "ok"]);
    expect(rows[1]?.detail).toMatchObject({
      inspection: "refused",
      dangerousPermissions: "universal-transfer",
    });

    // Unreachable now: UNAVAILABLE, and the recorded result stays as it was.
    broker.upstream.binanceRestrictions = "reset";
    const err = await failureOf(
      unary(broker.clients.secrets, "InspectSecret", { secretId: stored.id }, auth()),
    );
    expect(err.code).toBe(status.UNAVAILABLE);
  });

  it("H104 InspectSecret on a provider without a recipe answers verdict none", async () => {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "plain", fields: { token: broker.upstreamCredentials.bearer } },
      auth(),
    );
    const id = (response.secret as WireMessage).id as string;
    expect((response.secret as WireMessage).inspection).toMatchObject({ verdict: "none", permissions: [] });
    const again = await unary(broker.clients.secrets, "InspectSecret", { secretId: id }, auth());
    expect((again.response.secret as WireMessage).inspection).toMatchObject({ verdict: "none" });
  });

  const putGraph = async () => {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      {
        provider: "test-graph",
        label: `graph-${Math.random().toString(36).slice(2)}`,
        fields: {
          access_token: broker.upstreamCredentials.fbToken,
          app_secret: broker.upstreamCredentials.fbAppSecret,
        },
      },
      auth(),
    );
    return (response.secret as WireMessage).id as string;
  };
  const expectedAccounts = {
    data: [
      { name: "Page one", access_token: "[redacted]", id: "101", tasks: ["MANAGE"] },
      { name: "Page two", access_token: "[redacted]", id: "102" },
      { name: "Page three", connected: { instagram: { ACCESS_TOKEN: "[redacted]" } }, id: "103" },
      { name: "Page four", access_token: "[redacted]" },
    ],
    paging: { cursors: { before: "QVFIUk1", after: "QVFIUjZA" } },
  };

  it("H95 redacts page access tokens, nested and escaped, from a Graph /me/accounts answer via Call", async () => {
    const secretId = await putGraph();
    const { response } = await unary(
      broker.clients.proxy,
      "Call",
      { secretId, method: "GET", path: "/me/accounts" },
      auth(),
    );
    const body = Buffer.from(response.body as Uint8Array).toString("utf8");
    seen.push(body);
    expect(response.status).toBe(200);
    expect(findLeaks(body, broker.upstream.pageTokens)).toEqual([]);
    expect(JSON.parse(body)).toEqual(expectedAccounts);
    const rows = await auditDetails("proxy.call");
    expect(rows.at(-1)?.detail).toMatchObject({ redactions: 4 });
    const metrics = await (await fetch(`${broker.opsUrl}/metrics`)).text();
    expect(metrics).toMatch(/keybroker_response_redactions_total\{provider="test-graph"\} [1-9]/);
  });

  it("H96 redacts page access tokens from a Graph /me/accounts answer via CallStream, split across chunks", async () => {
    const secretId = await putGraph();
    const { messages } = await serverStream(
      broker.clients.proxy,
      "CallStream",
      { secretId, method: "GET", path: "/ME/accounts" },
      auth(),
    );
    const chunks = messages.filter((m) => m.part === "chunk").map((m) => Buffer.from(m.chunk as Uint8Array));
    const body = Buffer.concat(chunks).toString("utf8");
    seen.push(body);
    expect(chunks.length).toBeGreaterThan(1);
    expect(findLeaks(body, broker.upstream.pageTokens)).toEqual([]);
    expect(JSON.parse(body)).toEqual(expectedAccounts);
  });
});
