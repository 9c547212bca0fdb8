import { type ServiceError, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { type GrpcCallOptions, unary, type WireMessage } from "../support/grpc-client.js";

/**
 * Catalogue L8: the broker shares one connection pool per provider, so without a bound one
 * user's slow calls could hold every connection and stall that provider for everyone. Calls in
 * flight are bounded per secret (and per caller key); the excess is refused at once.
 */
describe("L8 concurrent proxied calls are bounded per secret", () => {
  let broker: BrokerHarness;
  let alice: GrpcCallOptions;

  beforeAll(async () => {
    broker = await startBroker("pglite", {
      KEYBROKER_MAX_CONCURRENT_CALLS_PER_SECRET: "2",
      KEYBROKER_MAX_QUEUED_CALLS_PER_SECRET: "0",
    });
    const { key } = await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"]);
    alice = { callerKey: key, bearerToken: await broker.tokenFor("google-oauth2|l8-alice") };
  });

  afterAll(async () => {
    await broker?.close();
  });

  async function putSecret(label: string): Promise<string> {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label, fields: { token: broker.upstreamCredentials.bearer } },
      alice,
    );
    return (response.secret as WireMessage).id as string;
  }

  const call = (secretId: string, path: string, deadlineMs = 10_000) =>
    unary(broker.clients.proxy, "Call", { secretId, method: "GET", path }, { ...alice, deadlineMs }).then(
      () => undefined,
      (err: ServiceError) => err,
    );

  it("L8 refuses a third concurrent call on one secret with RESOURCE_EXHAUSTED before sending it, while other secrets work, and frees the slots", async () => {
    const slow = await putSecret("l8 slow");
    const other = await putSecret("l8 other");
    broker.upstream.reset();
    const hanging = [call(slow, "/hang", 2_500), call(slow, "/hang", 2_500)];
    for (let i = 0; i < 100 && broker.upstream.requests.length < 2; i++) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(broker.upstream.requests).toHaveLength(2);

    const refused = await call(slow, "/ok");
    expect(refused?.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(refused?.details).toMatch(/too many concurrent calls with this secret/);
    expect(broker.upstream.requests).toHaveLength(2); // nothing was sent for it
    expect(await call(other, "/ok")).toBeUndefined();

    expect((await Promise.all(hanging)).map((err) => err?.code)).toEqual([
      status.DEADLINE_EXCEEDED,
      status.DEADLINE_EXCEEDED,
    ]);
    expect(await call(slow, "/ok")).toBeUndefined();
  });
});
