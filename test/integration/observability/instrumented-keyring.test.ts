import { randomBytes } from "node:crypto";
import type { KMSClient } from "@aws-sdk/client-kms";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createAwsKmsKeyring, createKmsClient } from "../../../src/keys/aws-kms-keyring.js";
import type { EncryptionContext } from "../../../src/keys/keyring.js";
import { createInstrumentedKeyring } from "../../../src/observability/instrumented-keyring.js";
import { createMetrics, type Metrics } from "../../../src/observability/metrics.js";
import { type LocalKmsServer, startLocalKmsServer } from "../../support/local-kms-server.js";

// The real AWS SDK keyring against the local KMS server, wrapped by the instrumented keyring:
// outcomes are the BrokerError codes the real error mapping produces.

const credentials = { accessKeyId: "AKIDLOCALTEST", secretAccessKey: "local-test-secret" };
const userRef = `uref-${randomBytes(16).toString("hex")}`;
const context: EncryptionContext = { purpose: "keybroker:user-data-key", user_ref: userRef };

let kms: LocalKmsServer;
let keyA: string;
let keyB: string;
const clients: KMSClient[] = [];

function instrumented(metrics: Metrics, keyId = keyA) {
  // One attempt, so each faulted request is exactly one failed keyring call.
  const client = createKmsClient({ region: kms.region, endpoint: kms.endpoint, maxAttempts: 1, credentials });
  clients.push(client);
  return createInstrumentedKeyring({ keyring: createAwsKmsKeyring({ client, keyId }), metrics });
}

function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

beforeAll(async () => {
  kms = await startLocalKmsServer();
  keyA = kms.createKey("master A");
  keyB = kms.createKey("master B");
});

afterEach(() => {
  kms.setFaults({ failNext: 0, failWith: { type: "KMSInternalException", status: 500 }, down: false });
  kms.enableKey(keyA);
  for (const c of clients.splice(0)) c.destroy();
});

afterAll(async () => {
  await kms.close();
});

describe("instrumented keyring (real SDK, local KMS server)", () => {
  it("passes every verb through and counts each as ok with its duration", async () => {
    const metrics = createMetrics();
    const keyring = instrumented(metrics);

    const generated = await keyring.generateDataKey(context);
    const unwrapped = await keyring.decrypt(generated, context);
    const rewrapped = await keyring.reEncrypt(generated, context, keyB);

    expect(keyring.kind).toBe("aws-kms");
    expect(keyring.currentKeyId()).toBe(keyA);
    expect(unwrapped.plaintext.equals(generated.plaintext)).toBe(true);
    expect(rewrapped.keyId).toBe(keyB);
    const text = await metrics.registry.metrics();
    for (const op of ["generate_data_key", "decrypt", "re_encrypt"]) {
      expect(sample(text, `keybroker_kms_requests_total{op="${op}",outcome="ok"}`)).toBe(1);
      expect(sample(text, `keybroker_kms_duration_seconds_count{op="${op}"}`)).toBe(1);
    }
    expect(sample(text, `keybroker_kms_duration_seconds_sum{op="decrypt"}`)).toBeGreaterThan(0);
    generated.plaintext.fill(0);
    unwrapped.plaintext.fill(0);
  });

  it("counts a KMS outage as unavailable and rethrows the keyring's own error", async () => {
    const metrics = createMetrics();
    const keyring = instrumented(metrics);
    kms.setFaults({ failNext: 2 });

    await expect(keyring.generateDataKey(context)).rejects.toMatchObject({ code: "unavailable" });
    await expect(
      keyring.decrypt({ wrapped: randomBytes(64), keyId: keyring.currentKeyId() }, context),
    ).rejects.toMatchObject({ code: "unavailable" });

    const text = await metrics.registry.metrics();
    expect(sample(text, `keybroker_kms_requests_total{op="generate_data_key",outcome="unavailable"}`)).toBe(
      1,
    );
    expect(sample(text, `keybroker_kms_requests_total{op="decrypt",outcome="unavailable"}`)).toBe(1);
    expect(text).not.toContain(`outcome="ok"`);
  });

  it("F53 counts a disabled master key as failed_precondition", async () => {
    const metrics = createMetrics();
    const keyring = instrumented(metrics);
    kms.disableKey(keyA);

    await expect(keyring.generateDataKey(context)).rejects.toMatchObject({ code: "failed_precondition" });

    const text = await metrics.registry.metrics();
    expect(
      sample(text, `keybroker_kms_requests_total{op="generate_data_key",outcome="failed_precondition"}`),
    ).toBe(1);
  });

  it("counts a wrapped key presented with another context as data_loss", async () => {
    const metrics = createMetrics();
    const keyring = instrumented(metrics);
    const generated = await keyring.generateDataKey(context);
    generated.plaintext.fill(0);

    const otherUser = { ...context, user_ref: `uref-${randomBytes(16).toString("hex")}` };
    await expect(keyring.decrypt(generated, otherUser)).rejects.toMatchObject({ code: "data_loss" });
    await expect(keyring.reEncrypt(generated, otherUser, keyB)).rejects.toMatchObject({
      code: "data_loss",
    });

    const text = await metrics.registry.metrics();
    expect(sample(text, `keybroker_kms_requests_total{op="decrypt",outcome="data_loss"}`)).toBe(1);
    expect(sample(text, `keybroker_kms_requests_total{op="re_encrypt",outcome="data_loss"}`)).toBe(1);
    expect(sample(text, `keybroker_kms_requests_total{op="generate_data_key",outcome="ok"}`)).toBe(1);
  });

  it("never exposes a key id, a wrapped key or an encryption context value", async () => {
    const metrics = createMetrics();
    const keyring = instrumented(metrics);
    const generated = await keyring.generateDataKey(context);
    generated.plaintext.fill(0);
    await keyring.reEncrypt(generated, context, keyB);
    kms.setFaults({ failNext: 1, failWith: { type: "AccessDeniedException", status: 400 } });
    await expect(keyring.decrypt(generated, context)).rejects.toMatchObject({
      code: "failed_precondition",
    });

    const text = await metrics.registry.metrics();
    const keyUuid = (arn: string) => arn.slice(arn.lastIndexOf("/") + 1);
    for (const forbidden of [
      userRef,
      "keybroker:user-data-key",
      keyUuid(keyA),
      keyUuid(keyB),
      "arn:aws:kms",
      Buffer.from(generated.wrapped).toString("base64"),
    ]) {
      expect(text).not.toContain(forbidden);
    }
    expect(sample(text, `keybroker_kms_requests_total{op="decrypt",outcome="failed_precondition"}`)).toBe(1);
  });
});
