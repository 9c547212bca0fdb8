import { randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type AlertWebhookReceiver, startAlertWebhookReceiver } from "../support/alert-webhook-receiver.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { asServiceError, unary, type WireMessage } from "../support/grpc-client.js";
import { describeOnEachDatabase } from "../support/test-database.js";

const USER = "google-oauth2|signals-e2e-canary-user";
const PROBES = 24;
const BURST = 12;

async function until(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await condition()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describeOnEachDatabase("misuse signals through a real broker on %s", (kind) => {
  let broker: BrokerHarness;
  let receiver: AlertWebhookReceiver;
  let dir: string;
  let appKey: { key: string; id: string };
  let oldToken: string;
  let secretId: string;

  beforeAll(async () => {
    receiver = await startAlertWebhookReceiver();
    dir = await mkdtemp(join(tmpdir(), "keybroker-signals-"));
    await writeFile(join(dir, "alert-secret"), receiver.secret);
    await writeFile(join(dir, "alert-ca.pem"), receiver.ca);
    broker = await startBroker(kind, {
      KEYBROKER_ALERT_WEBHOOK_URL: receiver.url,
      KEYBROKER_ALERT_WEBHOOK_SECRET_FILE: join(dir, "alert-secret"),
      KEYBROKER_ALERT_WEBHOOK_CA_FILE: join(dir, "alert-ca.pem"),
      KEYBROKER_SUSPEND_ON_SIGNALS: "probing",
    });
    appKey = await broker.callerKey(["secrets:write", "proxy:call"]);
    // A token minted 40 minutes ago and still valid: what a replayed one looks like.
    const now = Math.floor(Date.now() / 1000);
    oldToken = await broker.tokenFor(USER, { iat: now - 2400, exp: now + 3600 });
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "saas", fields: { token: broker.upstreamCredentials.bearer } },
      { callerKey: appKey.key, bearerToken: oldToken },
    );
    secretId = (response.secret as WireMessage).id as string;
  });

  afterAll(async () => {
    await broker?.close();
    await receiver?.close();
    await rm(dir, { recursive: true, force: true });
  });

  const proxyCall = (id: string, key = appKey.key) =>
    unary(
      broker.clients.proxy,
      "Call",
      { secretId: id, method: "GET", path: "/ok" },
      { callerKey: key, bearerToken: oldToken },
    );

  it("H118 a user's burst far above their baseline raises user_rate: a metric, an audit row and a verified webhook", async () => {
    receiver.failNext(1);
    for (let i = 0; i < BURST; i++) await proxyCall(secretId);

    await until(() => receiver.alerts().some((a) => a.signal === "user_rate"), "the user_rate webhook");
    await broker.app.flushAudit();
    const rows = await broker.database.db
      .selectFrom("audit_events")
      .select(["action", "caller_key_id", "detail", "user_ref"])
      .where("action", "=", "misuse.signal")
      .execute();
    expect(rows).toEqual([
      expect.objectContaining({
        caller_key_id: appKey.id,
        detail: expect.objectContaining({ reason: "user_rate" }),
      }),
    ]);
    const metrics = await (await fetch(`${broker.opsUrl}/metrics`)).text();
    expect(metrics).toContain('keybroker_misuse_signals_total{signal="user_rate"} 1');
    const alert = receiver.alerts().find((a) => a.signal === "user_rate");
    expect(alert).toMatchObject({ callerKey: { id: appKey.id }, suspended: false });
    expect(alert?.observed).toBeGreaterThanOrEqual(10);
    // The first delivery was answered 503 and retried; both carried a valid signature.
    expect(receiver.received.map((r) => [r.verified, r.accepted])).toEqual([
      [true, false],
      [true, true],
    ]);
  });

  it("H117 a withdrawal attempt the policy refuses still raises dangerous_first_use, naming the class", async () => {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      {
        provider: "test-binance",
        label: "exchange",
        fields: {
          api_key: broker.upstreamCredentials.binanceKey,
          api_secret: broker.upstreamCredentials.binanceSecret,
        },
      },
      { callerKey: appKey.key, bearerToken: oldToken },
    );
    const exchangeId = (response.secret as WireMessage).id as string;

    const refused = asServiceError(
      await unary(
        broker.clients.proxy,
        "Call",
        { secretId: exchangeId, method: "POST", path: "/sapi/v1/capital/withdraw/apply" },
        { callerKey: appKey.key, bearerToken: oldToken },
      ).catch((e: unknown) => e),
    );

    expect(refused.code).toBe(status.PERMISSION_DENIED);
    await until(() => receiver.alerts().some((a) => a.signal === "dangerous_first_use"), "the webhook");
    expect(receiver.alerts().find((a) => a.signal === "dangerous_first_use")).toMatchObject({
      callerKey: { id: appKey.id },
      operationClass: "transfer",
      suspended: false,
    });
    const metrics = await (await fetch(`${broker.opsUrl}/metrics`)).text();
    expect(metrics).toContain('keybroker_misuse_signals_total{signal="dangerous_first_use"} 1');
  });

  it("H119 probing by one caller key raises probing and suspends that key on every call after (fail closed)", async () => {
    for (let i = 0; i < PROBES; i++) {
      const err = asServiceError(await proxyCall(randomUUID()).catch((e: unknown) => e));
      if (err.code === status.UNAUTHENTICATED) break;
      expect(err.code).toBe(status.NOT_FOUND);
    }

    await until(() => receiver.alerts().some((a) => a.signal === "probing"), "the probing webhook");
    expect(receiver.alerts().find((a) => a.signal === "probing")).toMatchObject({ suspended: true });
    await until(
      async () =>
        (
          await broker.database.db
            .selectFrom("caller_keys")
            .select("suspended_reason")
            .where("id", "=", appKey.id)
            .executeTakeFirstOrThrow()
        ).suspended_reason === "probing",
      "the suspension row",
    );
    const refused = asServiceError(await proxyCall(secretId).catch((e: unknown) => e));
    expect(refused.code).toBe(status.UNAUTHENTICATED);
    expect(refused.details).toBe("invalid caller key");
    await broker.app.flushAudit();
    const actions = await broker.database.db
      .selectFrom("audit_events")
      .select(["action", "detail"])
      .where("action", "in", ["misuse.signal", "caller_key.suspend"])
      .orderBy("seq")
      .execute();
    expect(actions.map((a) => [a.action, (a.detail as { reason?: string }).reason])).toEqual([
      ["misuse.signal", "user_rate"],
      ["misuse.signal", "dangerous_first_use"],
      ["misuse.signal", "probing"],
      ["caller_key.suspend", "probing"],
    ]);
  });

  it("H120 webhook bodies carry names, ids and counts, never the user's sub, a token or a secret", () => {
    const bodies = receiver.received.map((r) => r.body.toString("utf8")).join("\n");
    expect(bodies).not.toContain(USER);
    expect(bodies).not.toContain(oldToken);
    expect(bodies).not.toContain(broker.upstreamCredentials.bearer);
    expect(bodies).not.toContain(appKey.key);
  });
});
