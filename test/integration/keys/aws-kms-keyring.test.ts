import { randomBytes } from "node:crypto";
import type { KMSClient } from "@aws-sdk/client-kms";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createAwsKmsKeyring, createKmsClient, resolveKmsKeyArn } from "../../../src/keys/aws-kms-keyring.js";
import type { EncryptionContext } from "../../../src/keys/keyring.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { type LocalKmsServer, startLocalKmsServer } from "../../support/local-kms-server.js";

// The real @aws-sdk/client-kms against a local server speaking the KMS JSON protocol:
// signing, retries, error deserialisation and abort are the SDK's own.

const credentials = { accessKeyId: "AKIDLOCALTEST", secretAccessKey: "local-test-secret" };
const contextA: EncryptionContext = {
  purpose: "keybroker:user-data-key",
  user_ref: randomBytes(32).toString("hex"),
};
const contextB: EncryptionContext = {
  purpose: "keybroker:user-data-key",
  user_ref: randomBytes(32).toString("hex"),
};

let kms: LocalKmsServer;
let keyA: string;
let keyB: string;
const clients: KMSClient[] = [];

function client(maxAttempts = 3, endpoint = kms.endpoint): KMSClient {
  const created = createKmsClient({
    region: kms.region,
    endpoint,
    maxAttempts,
    credentials,
    requestTimeoutMs: 2_000,
  });
  clients.push(created);
  return created;
}

beforeAll(async () => {
  kms = await startLocalKmsServer();
  keyA = kms.createKey("master A");
  keyB = kms.createKey("master B");
});

afterEach(() => {
  kms.setFaults({
    throttleNext: 0,
    failNext: 0,
    failWith: { type: "KMSInternalException", status: 500 },
    latencyMs: 0,
    down: false,
  });
  kms.resetCounts();
  for (const c of clients.splice(0)) c.destroy();
});

afterAll(async () => {
  await kms.close();
});

describe("AWS KMS keyring (real SDK, local KMS server)", () => {
  it("generates a data key, decrypts it with its context, and reports the key ARN", async () => {
    const keyring = createAwsKmsKeyring({ client: client(), keyId: keyA });
    expect(keyring.kind).toBe("aws-kms");
    expect(keyring.currentKeyId()).toBe(keyA);
    const generated = await keyring.generateDataKey(contextA);
    expect(generated.plaintext).toHaveLength(32);
    expect(generated.keyId).toBe(keyA);
    const unwrapped = await keyring.decrypt(generated, contextA);
    expect(unwrapped.plaintext.equals(generated.plaintext)).toBe(true);
    expect(unwrapped.keyId).toBe(keyA);
  });

  it("re-encrypts under a second master key; the result decrypts to the same data key", async () => {
    const keyring = createAwsKmsKeyring({ client: client(), keyId: keyA });
    const generated = await keyring.generateDataKey(contextA);
    const rewrapped = await keyring.reEncrypt(generated, contextA, keyB);
    expect(rewrapped.keyId).toBe(keyB);
    const unwrapped = await keyring.decrypt(rewrapped, contextA);
    expect(unwrapped.keyId).toBe(keyB);
    expect(unwrapped.plaintext.equals(generated.plaintext)).toBe(true);
  });

  it("resolves an alias to the key ARN that wrapped keys report", async () => {
    kms.createAlias("alias/keybroker-test", keyA);
    const c = client();
    expect(await resolveKmsKeyArn(c, "alias/keybroker-test")).toBe(keyA);
    const keyring = createAwsKmsKeyring({ client: c, keyId: "alias/keybroker-test" });
    expect((await keyring.generateDataKey(contextA)).keyId).toBe(keyA);
  });

  it("reports data_loss when A's wrapped key is presented under B's context", async () => {
    const keyring = createAwsKmsKeyring({ client: client(), keyId: keyA });
    const ofA = await keyring.generateDataKey(contextA);
    const err = await brokerErrorOf(keyring.decrypt(ofA, contextB));
    expect(err.code).toBe("data_loss");
    expect(kms.callCount("Decrypt")).toBe(1);
  });

  it("M2 refuses a data key wrapped under another master key than its row names (Decrypt and ReEncrypt send the row's key id)", async () => {
    // A database writer stores a data key it made under a key the broker's role can also use.
    const attackers = createAwsKmsKeyring({ client: client(), keyId: keyB });
    const substituted = await attackers.generateDataKey(contextA);
    substituted.plaintext.fill(0);
    const keyring = createAwsKmsKeyring({ client: client(), keyId: keyA });

    const row = { wrapped: substituted.wrapped, keyId: keyA };
    expect((await brokerErrorOf(keyring.decrypt(row, contextA))).code).toBe("data_loss");
    expect((await brokerErrorOf(keyring.reEncrypt(row, contextA, keyA))).code).toBe("data_loss");
  });

  it("M2 refuses an answer under another key id than the row names (an alias in the row is not the ARN)", async () => {
    kms.createAlias("alias/m2-row-alias", keyA);
    const keyring = createAwsKmsKeyring({ client: client(), keyId: keyA });
    const generated = await keyring.generateDataKey(contextA);
    generated.plaintext.fill(0);

    const err = await brokerErrorOf(
      keyring.decrypt({ wrapped: generated.wrapped, keyId: "alias/m2-row-alias" }, contextA),
    );

    expect(err.code).toBe("data_loss");
  });

  it("F6 gives up on a hung KMS after the per-attempt timeout, whatever the number of attempts", async () => {
    const hung = createKmsClient({
      region: kms.region,
      endpoint: kms.endpoint,
      maxAttempts: 2,
      credentials,
      requestTimeoutMs: 200,
    });
    clients.push(hung);
    const keyring = createAwsKmsKeyring({ client: hung, keyId: keyA });
    kms.setFaults({ latencyMs: 3_000 });
    const began = Date.now();

    const err = await brokerErrorOf(keyring.generateDataKey(contextA));

    expect(err.code).toBe("unavailable");
    expect(Date.now() - began).toBeLessThan(1_500);
  });

  it("F6 gives up at the caller's deadline while KMS hangs, before the attempts run out", async () => {
    const keyring = createAwsKmsKeyring({ client: client(3), keyId: keyA });
    kms.setFaults({ latencyMs: 3_000 });
    const began = Date.now();

    const err = await brokerErrorOf(keyring.generateDataKey(contextA, { signal: AbortSignal.timeout(300) }));

    expect(err.code).toBe("deadline_exceeded");
    expect(Date.now() - began).toBeLessThan(1_000);
  });

  it("reports data_loss for a corrupted wrapped key", async () => {
    const keyring = createAwsKmsKeyring({ client: client(), keyId: keyA });
    const { wrapped } = await keyring.generateDataKey(contextA);
    const tampered = Buffer.from(wrapped);
    tampered[tampered.length - 1] = (tampered[tampered.length - 1] ?? 0) ^ 0x01;
    expect((await brokerErrorOf(keyring.decrypt({ wrapped: tampered, keyId: keyA }, contextA))).code).toBe(
      "data_loss",
    );
  });

  it("F53 rides out two throttles: the SDK retries and the third call succeeds", async () => {
    const keyring = createAwsKmsKeyring({ client: client(3), keyId: keyA });
    kms.setFaults({ throttleNext: 2 });
    const generated = await keyring.generateDataKey(contextA);
    expect(generated.plaintext).toHaveLength(32);
    expect(kms.callCount("GenerateDataKey")).toBe(3);
  });

  it("F53 reports unavailable under persistent throttling, after exactly maxAttempts calls", async () => {
    const keyring = createAwsKmsKeyring({ client: client(2), keyId: keyA });
    kms.setFaults({ throttleNext: 1_000 });
    const err = await brokerErrorOf(keyring.generateDataKey(contextA));
    expect(err.code).toBe("unavailable");
    expect(err.message).toBe("key management service unavailable");
    expect(kms.callCount("GenerateDataKey")).toBe(2);
  });

  it("retries a KMS internal error (HTTP 500) and succeeds", async () => {
    const keyring = createAwsKmsKeyring({ client: client(3), keyId: keyA });
    const { wrapped } = await keyring.generateDataKey(contextA);
    kms.resetCounts();
    kms.setFaults({ failNext: 1 });
    await expect(keyring.decrypt({ wrapped, keyId: keyA }, contextA)).resolves.toMatchObject({ keyId: keyA });
    expect(kms.callCount("Decrypt")).toBe(2);
  });

  it("F53 reports failed_precondition for a disabled key after exactly one call (never retried)", async () => {
    const disabled = kms.createKey("to be disabled");
    const keyring = createAwsKmsKeyring({ client: client(5), keyId: disabled });
    const { wrapped } = await keyring.generateDataKey(contextA);
    kms.disableKey(disabled);
    kms.resetCounts();
    const err = await brokerErrorOf(keyring.decrypt({ wrapped, keyId: disabled }, contextA));
    expect(err.code).toBe("failed_precondition");
    expect(kms.callCount("Decrypt")).toBe(1);
    expect((await brokerErrorOf(keyring.generateDataKey(contextA))).code).toBe("failed_precondition");
    expect(kms.callCount("GenerateDataKey")).toBe(1);
  });

  // KMS's own statuses: these are 400s, which the SDK's standard retry mode never retries.
  for (const type of ["AccessDeniedException", "KMSInvalidStateException", "NotFoundException"]) {
    it(`reports failed_precondition for ${type} after exactly one call`, async () => {
      const keyring = createAwsKmsKeyring({ client: client(5), keyId: keyA });
      kms.setFaults({ failNext: 1, failWith: { type, status: 400 } });
      expect((await brokerErrorOf(keyring.generateDataKey(contextA))).code).toBe("failed_precondition");
      expect(kms.callCount("GenerateDataKey")).toBe(1);
    });
  }

  // KMS answers KeyUnavailableException with HTTP 500 and documents it as retryable; the SDK
  // retries it like any 5xx, so it is transient ("unavailable"), not a misconfiguration.
  it("retries KeyUnavailableException (HTTP 500) and reports unavailable if it persists", async () => {
    const keyring = createAwsKmsKeyring({ client: client(2), keyId: keyA });
    kms.setFaults({ failNext: 10, failWith: { type: "KeyUnavailableException", status: 500 } });
    expect((await brokerErrorOf(keyring.generateDataKey(contextA))).code).toBe("unavailable");
    expect(kms.callCount("GenerateDataKey")).toBe(2);
  });

  it("reports failed_precondition for a key that does not exist", async () => {
    const keyring = createAwsKmsKeyring({ client: client(), keyId: "alias/does-not-exist" });
    expect((await brokerErrorOf(keyring.generateDataKey(contextA))).code).toBe("failed_precondition");
    expect(kms.callCount("GenerateDataKey")).toBe(1);
  });

  it("reports unavailable when the server drops every connection, after bounded attempts", async () => {
    const keyring = createAwsKmsKeyring({ client: client(3), keyId: keyA });
    await keyring.generateDataKey(contextA); // leaves a kept-alive connection to be dropped
    kms.setFaults({ down: true });
    const started = Date.now();
    const err = await brokerErrorOf(keyring.generateDataKey(contextA));
    expect(err.code).toBe("unavailable");
    expect(Date.now() - started).toBeLessThan(5_000);
    kms.setFaults({ down: false });
    await expect(keyring.generateDataKey(contextA)).resolves.toMatchObject({ keyId: keyA });
  });

  it("reports unavailable when nothing listens at the endpoint", async () => {
    const gone = await startLocalKmsServer();
    const endpoint = gone.endpoint;
    await gone.close();
    const keyring = createAwsKmsKeyring({ client: client(2, endpoint), keyId: keyA });
    expect((await brokerErrorOf(keyring.generateDataKey(contextA))).code).toBe("unavailable");
  });

  it("reports unavailable when every attempt times out, after maxAttempts calls", async () => {
    const impatient = createKmsClient({
      region: kms.region,
      endpoint: kms.endpoint,
      maxAttempts: 2,
      credentials,
      requestTimeoutMs: 150,
    });
    clients.push(impatient);
    const keyring = createAwsKmsKeyring({ client: impatient, keyId: keyA });
    kms.setFaults({ latencyMs: 5_000 });
    const err = await brokerErrorOf(keyring.generateDataKey(contextA));
    expect(err.code).toBe("unavailable");
    expect(kms.callCount("GenerateDataKey")).toBe(2);
  });

  it("F52 reports deadline_exceeded promptly when the caller's signal aborts a slow call", async () => {
    const keyring = createAwsKmsKeyring({ client: client(3), keyId: keyA });
    kms.setFaults({ latencyMs: 10_000 });
    const started = Date.now();
    const err = await brokerErrorOf(keyring.generateDataKey(contextA, { signal: AbortSignal.timeout(100) }));
    expect(err.code).toBe("deadline_exceeded");
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(kms.callCount("GenerateDataKey")).toBe(1);
  });

  it("reports deadline_exceeded without calling KMS when the signal is already aborted", async () => {
    const keyring = createAwsKmsKeyring({ client: client(), keyId: keyA });
    const err = await brokerErrorOf(
      keyring.decrypt({ wrapped: randomBytes(64), keyId: keyA }, contextA, { signal: AbortSignal.abort() }),
    );
    expect(err.code).toBe("deadline_exceeded");
    expect(kms.callCount()).toBe(0);
  });

  it("keeps the context's user ref and all key material out of every error message", async () => {
    const keyring = createAwsKmsKeyring({ client: client(2), keyId: keyA });
    const generated = await keyring.generateDataKey(contextA);
    const secrets = [
      contextA.user_ref,
      contextB.user_ref,
      generated.plaintext.toString("hex"),
      generated.plaintext.toString("base64"),
      Buffer.from(generated.wrapped).toString("base64"),
    ].filter((s): s is string => s !== undefined);

    const errors = [await brokerErrorOf(keyring.decrypt(generated, contextB))];
    kms.disableKey(keyA);
    try {
      errors.push(await brokerErrorOf(keyring.decrypt(generated, contextA)));
    } finally {
      kms.enableKey(keyA);
    }
    kms.setFaults({ throttleNext: 10 });
    errors.push(await brokerErrorOf(keyring.decrypt(generated, contextA)));

    expect(errors.map((e) => e.code)).toEqual(["data_loss", "failed_precondition", "unavailable"]);
    for (const err of errors) {
      const shown = `${err.message} ${String(err)} ${JSON.stringify(err)}`;
      for (const secret of secrets) expect(shown).not.toContain(secret);
    }
  });

  it("server: refuses a request without a SigV4 authorization header", async () => {
    const res = await fetch(kms.endpoint, {
      method: "POST",
      headers: { "content-type": "application/x-amz-json-1.1", "x-amz-target": "TrentService.DescribeKey" },
      body: JSON.stringify({ KeyId: keyA }),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { __type: string }).__type).toBe("MissingAuthenticationTokenException");
  });
});
