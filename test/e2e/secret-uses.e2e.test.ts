import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { asServiceError, unary, type WireMessage } from "../support/grpc-client.js";

// Issue 13 item 8: a user sees their own key's use, from the audit trail, paginated.

const ALICE = "google-oauth2|secret-uses-alice";
const BOB = "google-oauth2|secret-uses-bob";
const CANARY = "path-canary-4242";

describe("ListSecretUses", () => {
  let broker: BrokerHarness;
  let appKey: string;
  let reportingKey: string;
  let alice: string;
  let bob: string;
  let aliceSecret: string;
  let bobSecret: string;

  const as = (callerKey: string, token: string) => ({ callerKey, bearerToken: token });
  const put = async (token: string, label: string) => {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label, fields: { token: broker.upstreamCredentials.bearer } },
      as(appKey, token),
    );
    return (response.secret as WireMessage).id as string;
  };
  const call = (callerKey: string, token: string, secretId: string, method: string, path: string) =>
    unary(
      broker.clients.proxy,
      "Call",
      { secretId, method, path, query: [{ name: "q", value: CANARY }] },
      as(callerKey, token),
    );
  const uses = (token: string, secretId: string, pageSize = 0, pageToken = "") =>
    unary(broker.clients.secrets, "ListSecretUses", { secretId, pageSize, pageToken }, as(appKey, token));
  const failureOf = (promise: Promise<unknown>) =>
    promise.then(
      () => {
        throw new Error("expected the call to fail");
      },
      (err: unknown) => asServiceError(err),
    );

  beforeAll(async () => {
    broker = await startBroker("pglite");
    appKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    reportingKey = (await broker.callerKey(["proxy:call"])).key;
    alice = await broker.tokenFor(ALICE);
    bob = await broker.tokenFor(BOB);
    aliceSecret = await put(alice, "alice");
    bobSecret = await put(bob, "bob");
    await call(appKey, alice, aliceSecret, "GET", "/ok");
    await call(reportingKey, alice, aliceSecret, "POST", "/ok");
    await call(appKey, alice, aliceSecret, "GET", "/status/404");
    await call(appKey, bob, bobSecret, "GET", "/ok");
  });

  afterAll(async () => {
    await broker?.close();
  });

  it("H111 lists the caller's own uses of a secret, newest first: time, class, method, upstream status, caller key name", async () => {
    const { response } = await uses(alice, aliceSecret);
    const listed = response.uses as WireMessage[];
    expect(
      listed.map((u) => [u.operationClass, u.method, u.upstreamStatus, u.callerKeyName, u.outcome, u.code]),
    ).toEqual([
      ["read", "GET", 404, "test secrets-read secrets-write proxy-call", "ok", ""],
      ["write", "POST", 200, "test proxy-call", "ok", ""],
      ["read", "GET", 200, "test secrets-read secrets-write proxy-call", "ok", ""],
    ]);
    const times = listed.map((u) => Number((u.time as { seconds: string }).seconds));
    expect(times.every((t) => Math.abs(t - Date.now() / 1000) < 600)).toBe(true);
    expect(response.nextPageToken).toBe("");
  });

  it("H111 never shows the concrete path or query of a use", async () => {
    const { response } = await uses(alice, aliceSecret);
    const text = JSON.stringify(response);
    expect(text).not.toContain(CANARY);
    expect(text).not.toContain("/status/404");
  });

  it("H111 pages through the uses with an opaque token, each use once", async () => {
    const first = await uses(alice, aliceSecret, 2);
    expect(first.response.uses as WireMessage[]).toHaveLength(2);
    const token = first.response.nextPageToken as string;
    expect(token).not.toBe("");
    const second = await uses(alice, aliceSecret, 2, token);
    expect((second.response.uses as WireMessage[]).map((u) => u.method)).toEqual(["GET"]);
    expect(second.response.nextPageToken).toBe("");
  });

  it("H112 answers NOT_FOUND for another user's secret, exactly as for an absent one", async () => {
    const theirs = await failureOf(uses(alice, bobSecret));
    const absent = await failureOf(uses(alice, "00000000-0000-4000-8000-000000000000"));
    expect([theirs.code, theirs.details]).toEqual([status.NOT_FOUND, "secret not found"]);
    expect([absent.code, absent.details]).toEqual([theirs.code, theirs.details]);
  });

  it("H112 refuses a page token it did not issue with INVALID_ARGUMENT", async () => {
    for (const forged of ["u1.5", "dTEuMA", Buffer.from("u1.-1").toString("base64url"), "x".repeat(100)]) {
      const err = await failureOf(uses(alice, aliceSecret, 2, forged));
      expect(err.code).toBe(status.INVALID_ARGUMENT);
    }
  });

  it("H112 needs the user's live token (an expired one is UNAUTHENTICATED)", async () => {
    const expired = await broker.tokenFor(ALICE, { exp: Math.floor(Date.now() / 1000) - 3600 });
    const err = await failureOf(uses(expired, aliceSecret));
    expect(err.code).toBe(status.UNAUTHENTICATED);
  });
});
