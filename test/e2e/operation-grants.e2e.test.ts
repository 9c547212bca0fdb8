import { type ServiceError, status } from "@grpc/grpc-js";
import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, expect, it } from "vitest";
import { refusalFromStatusDetails } from "../../src/api/error-info.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { asServiceError, serverStream, unary, type WireMessage } from "../support/grpc-client.js";
import { describeOnEachDatabase } from "../support/test-database.js";

/**
 * Issue 13 items 1-3 (SPEC I10) against the fake Binance-style exchange: a key is used only for the
 * operation classes its sealed grant and its caller key's scopes both allow, checked before the
 * user's data key is unwrapped (so before any decryption), and every refusal is audited.
 */

const USER = "google-oauth2|grants-e2e-user";
const WITHDRAW = { method: "POST", path: "/sapi/v1/capital/withdraw/apply" } as const;
const READ = { method: "GET", path: "/api/v3/ok" } as const;
const ORDER = { method: "POST", path: "/api/v3/order" } as const;

describeOnEachDatabase("operation classes, grants and class scopes end to end on %s", (kind) => {
  let broker: BrokerHarness;
  let token: string;
  /** secrets:read, secrets:write and the legacy proxy:call (every class but the dangerous ones). */
  let appKey: string;
  /** proxy:call plus the explicit proxy:transfer scope. */
  let transferKey: string;
  /** A read-only reporting service: proxy:read alone. */
  let readKey: string;

  beforeAll(async () => {
    broker = await startBroker(kind);
    token = await broker.tokenFor(USER);
    appKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    transferKey = (await broker.callerKey(["proxy:call", "proxy:transfer"])).key;
    readKey = (await broker.callerKey(["proxy:read"])).key;
  });

  afterAll(async () => {
    await broker.close();
    const c = broker.upstreamCredentials;
    expect(findLeaks(broker.logs.text(), [c.binanceKey, c.binanceSecret, USER, token])).toEqual([]);
  });

  beforeEach(() => broker.upstream.reset());

  const putBinance = async (label: string, grant?: readonly string[], secretId = "") => {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      {
        secretId,
        provider: "test-binance",
        label,
        fields: {
          api_key: broker.upstreamCredentials.binanceKey,
          api_secret: broker.upstreamCredentials.binanceSecret,
        },
        ...(grant === undefined ? {} : { grant }),
      },
      { callerKey: appKey, bearerToken: token },
    );
    return response.secret as WireMessage;
  };

  const call = (callerKey: string, secretId: string, endpoint: { method: string; path: string }) =>
    unary(broker.clients.proxy, "Call", { secretId, ...endpoint }, { callerKey, bearerToken: token });

  const failureOf = (promise: Promise<unknown>): Promise<ServiceError> =>
    promise.then(
      () => {
        throw new Error("expected the call to fail");
      },
      (err: unknown) => asServiceError(err),
    );

  const reasonOf = (err: ServiceError): string | undefined => {
    const [details] = err.metadata.get("grpc-status-details-bin");
    return details instanceof Buffer ? refusalFromStatusDetails(details)?.reason : undefined;
  };

  /**
   * Every unwrap of a user's data key, from the cache (hit) or through the KMS (miss): the
   * cache's own counters, as /metrics exposes them. A secret cannot be decrypted without one.
   */
  const dataKeyLookups = async (): Promise<number> => {
    const text = await (await fetch(`${broker.opsUrl}/metrics`)).text();
    const counter = (name: string) =>
      Number(new RegExp(`^${name} (\\d+)$`, "m").exec(text)?.[1] ?? Number.NaN);
    return counter("keybroker_data_key_cache_hits_total") + counter("keybroker_data_key_cache_misses_total");
  };

  const proxyRows = async (secretId: string) => {
    await broker.app.flushAudit();
    const rows = await broker.database.db
      .selectFrom("audit_events")
      .select(["outcome", "code", "detail"])
      .where("action", "=", "proxy.call")
      .where("target", "=", secretId)
      .orderBy("seq")
      .execute();
    return rows.map((r) => ({
      outcome: r.outcome,
      code: r.code,
      detail: r.detail as Record<string, unknown>,
    }));
  };

  it("H89 refuses a transfer with a default-grant key before anything is decrypted, and nothing reaches the exchange", async () => {
    const id = (await putBinance("default grant")).id as string;
    const decryptsBefore = broker.kms.callCount("Decrypt");
    const lookupsBefore = await dataKeyLookups();

    // Even a caller key that may make transfers cannot: the secret's grant does not include them.
    const err = await failureOf(call(transferKey, id, WITHDRAW));

    expect(err.code).toBe(status.PERMISSION_DENIED);
    expect(reasonOf(err)).toBe("operation_not_granted");
    expect(await dataKeyLookups()).toBe(lookupsBefore);
    expect(broker.kms.callCount("Decrypt")).toBe(decryptsBefore);
    expect(broker.upstream.requests).toHaveLength(0);
    const [started, denied] = await proxyRows(id);
    expect(started?.outcome).toBe("started");
    expect(denied).toMatchObject({
      outcome: "denied",
      code: "permission_denied",
      detail: { method: "POST", provider: "test-binance", operationClass: "transfer" },
    });
    expect(JSON.stringify(await proxyRows(id))).not.toContain(broker.upstreamCredentials.binanceKey);
  });

  it("H89 refuses a transfer to a proxy:call key for lack of the proxy:transfer scope, before any decryption", async () => {
    const id = (await putBinance("granted transfer", ["read", "transfer"])).id as string;
    const decryptsBefore = broker.kms.callCount("Decrypt");
    const lookupsBefore = await dataKeyLookups();

    const err = await failureOf(call(appKey, id, WITHDRAW));

    expect(err.code).toBe(status.PERMISSION_DENIED);
    expect(reasonOf(err)).toBe("caller_key_scope_missing");
    expect(err.details).toBe("caller key lacks the proxy:transfer scope");
    expect(await dataKeyLookups()).toBe(lookupsBefore);
    expect(broker.kms.callCount("Decrypt")).toBe(decryptsBefore);
    expect(broker.upstream.requests).toHaveLength(0);
  });

  it("H89 passes a read call, unsealing the key once, and audits its class", async () => {
    const id = (await putBinance("reads")).id as string;
    const lookupsBefore = await dataKeyLookups();

    const { response } = await call(appKey, id, READ);

    expect(response.status).toBe(200);
    expect(broker.upstream.requests).toHaveLength(1);
    // The contrast that makes the refusals above meaningful: a use does unwrap the data key.
    expect(await dataKeyLookups()).toBe(lookupsBefore + 1);
    expect((await proxyRows(id)).at(-1)).toMatchObject({
      outcome: "ok",
      detail: { operationClass: "read", upstreamStatus: 200 },
    });
  });

  it("H89 refuses an endpoint no class names, on Call and CallStream, and audits it as unclassified", async () => {
    const id = (await putBinance("unclassified")).id as string;
    const endpoint = { method: "POST", path: "/sapi/v1/not/a/known/endpoint" };

    const err = await failureOf(call(transferKey, id, endpoint));
    const streamErr = await failureOf(
      serverStream(
        broker.clients.proxy,
        "CallStream",
        { secretId: id, ...endpoint },
        { callerKey: transferKey, bearerToken: token },
      ),
    );

    for (const e of [err, streamErr]) {
      expect(e.code).toBe(status.PERMISSION_DENIED);
      expect(reasonOf(e)).toBe("operation_unclassified");
    }
    expect(broker.upstream.requests).toHaveLength(0);
    expect((await proxyRows(id)).filter((r) => r.outcome === "denied")).toHaveLength(2);
    expect((await proxyRows(id)).at(-1)?.detail.operationClass).toBe("unclassified");
  });

  it("H90 lets a caller key with only proxy:read read, but not trade", async () => {
    const id = (await putBinance("read-only service")).id as string;

    expect((await call(readKey, id, READ)).response.status).toBe(200);
    const err = await failureOf(call(readKey, id, ORDER));

    expect(err.code).toBe(status.PERMISSION_DENIED);
    expect(reasonOf(err)).toBe("caller_key_scope_missing");
    expect(err.details).toBe("caller key lacks the proxy:trade scope");
    expect(broker.upstream.requests.map((r) => r.method)).toEqual(["GET"]);
    // A key with no proxy scope at all is not even admitted.
    const none = (await broker.callerKey(["secrets:read"])).key;
    expect(reasonOf(await failureOf(call(none, id, READ)))).toBe("caller_key_scope_missing");
  });

  it("H91 shows the grant in ListSecrets, widens it only through PutSecret, and audits the widening", async () => {
    const created = await putBinance("widened later");
    const id = created.id as string;
    expect(created.grant).toEqual(["read", "trade", "write"]);

    const widened = await putBinance("widened later", ["transfer", "read"], id);
    expect(widened.grant).toEqual(["read", "transfer"]);
    const { response } = await unary(
      broker.clients.secrets,
      "ListSecrets",
      { provider: "test-binance" },
      { callerKey: appKey, bearerToken: token },
    );
    const listed = (response.secrets as WireMessage[]).find((s) => s.id === id);
    expect(listed?.grant).toEqual(["read", "transfer"]);

    // Now a transfer-scoped caller key can withdraw with it (the fake exchange verified the
    // signature, then has no such route: 404, not 401); trading is no longer granted.
    expect((await call(transferKey, id, WITHDRAW)).response.status).toBe(404);
    expect(broker.upstream.requests.map((r) => r.url.split("?")[0])).toEqual([
      "/binance/sapi/v1/capital/withdraw/apply",
    ]);
    expect(reasonOf(await failureOf(call(transferKey, id, ORDER)))).toBe("operation_not_granted");

    await broker.app.flushAudit();
    const puts = await broker.database.db
      .selectFrom("audit_events")
      .select(["outcome", "detail"])
      .where("action", "=", "secret.put")
      .where("target", "=", id)
      .where("outcome", "=", "ok")
      .orderBy("seq")
      .execute();
    expect(puts.map((p) => p.detail)).toMatchObject([
      { grant: "read,trade,write", grantChange: "new" },
      { grant: "read,transfer", grantChange: "widened" },
    ]);
  });

  it("H91 refuses a grant naming an unknown class as INVALID_ARGUMENT", async () => {
    const err = await failureOf(putBinance("bad grant", ["read", "withdraw"]));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toBe("unknown operation class(es): withdraw");
  });

  it("H92 answers DATA_LOSS to a grant widened by a database writer, and the exchange sees nothing", async () => {
    const id = (await putBinance("tampered grant")).id as string;
    await sql`update secrets set operation_grant = ${["read", "trade", "transfer", "write"]} where id = ${id}`.execute(
      broker.database.db,
    );

    const err = await failureOf(call(transferKey, id, WITHDRAW));

    expect(err.code).toBe(status.DATA_LOSS);
    expect(broker.upstream.requests).toHaveLength(0);
  });

  it("H92 answers DATA_LOSS to a grant cleared by a database writer (no fallback to the provider default)", async () => {
    const id = (await putBinance("cleared grant", ["read"])).id as string;
    await sql`update secrets set operation_grant = null where id = ${id}`.execute(broker.database.db);

    // Null would mean "stored before grants": the default grant, which includes trading.
    const err = await failureOf(call(appKey, id, ORDER));

    expect(err.code).toBe(status.DATA_LOSS);
    expect(broker.upstream.requests).toHaveLength(0);
  });
});
