import { createServer, request, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { unary, type WireMessage } from "../support/grpc-client.js";
import { createCanaryRegistry, describeLeaks, registerCanary } from "../support/leak-sweep.js";
import { type LocalKmsServer, startLocalKmsServer } from "../support/local-kms-server.js";

/**
 * Catalogue D38: AWS records every encryption context in CloudTrail, so what the broker sends
 * as context must not identify anyone. The broker runs against a local KMS behind a recording
 * proxy (the real AWS SDK, the real wire format); users arrive with tokens whose `sub` and
 * `email` are canaries, and every context of every KMS request is checked.
 */

const ALICE = "google-oauth2|context-alice-canary-7171";
const BOB = "facebook|context-bob-canary-8181";
const EMAIL = "context.canary.person@example.com";

interface KmsRequest {
  readonly operation: string;
  readonly contexts: ReadonlyArray<Record<string, unknown>>;
  readonly body: string;
}

/** Forwards to the real local KMS and records each request's operation and contexts. */
async function startRecordingProxy(target: string, seen: KmsRequest[]): Promise<Server> {
  const upstream = new URL(target);
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const operation = String(req.headers["x-amz-target"] ?? "").replace("TrentService.", "");
      const json = JSON.parse(body.toString("utf8") || "{}") as Record<string, unknown>;
      const contexts = ["EncryptionContext", "SourceEncryptionContext", "DestinationEncryptionContext"]
        .map((name) => json[name])
        .filter((c): c is Record<string, unknown> => typeof c === "object" && c !== null);
      seen.push({ operation, contexts, body: body.toString("utf8") });
      const forward = request(
        {
          host: upstream.hostname,
          port: upstream.port,
          method: req.method,
          path: req.url,
          headers: { ...req.headers, host: upstream.host },
        },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      forward.on("error", () => res.destroy());
      forward.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return server;
}

describe("D38 KMS encryption contexts", () => {
  const seen: KmsRequest[] = [];
  let kms: LocalKmsServer;
  let proxy: Server;
  let broker: BrokerHarness;
  const canaries = createCanaryRegistry();

  beforeAll(async () => {
    kms = await startLocalKmsServer();
    kms.createAlias("alias/keybroker", kms.createKey("D38 master key"));
    proxy = await startRecordingProxy(kms.endpoint, seen);
    const port = (proxy.address() as AddressInfo).port;
    broker = await startBroker("pglite", { KEYBROKER_KMS_ENDPOINT: `http://127.0.0.1:${port}` });
    const key = (await broker.callerKey(["secrets:read", "secrets:write"])).key;
    for (const sub of [ALICE, BOB]) {
      const token = await broker.tokenFor(sub, { email: EMAIL, name: "Context Canary Person" });
      for (const [label, value] of [
        ["sub", sub],
        ["token", token],
      ] as const) {
        canaries.register(label, value);
        registerCanary(label, value);
      }
      const auth = { callerKey: key, bearerToken: token };
      const put = await unary(
        broker.clients.secrets,
        "PutSecret",
        { provider: "test-upstream", label: "ci", fields: { token: "ghp_context_canary_value_0001" } },
        auth,
      );
      expect((put.response.secret as WireMessage).id).toBeTruthy();
      await unary(broker.clients.secrets, "ListSecrets", {}, auth);
    }
    canaries.register("email", EMAIL);
    canaries.register("subject without its provider prefix", "context-alice-canary-7171");
  });

  afterAll(async () => {
    await broker?.close();
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
    await kms.close();
  });

  it("D38 sends KMS a context for every data key it wraps or unwraps, and it names no user: only a purpose and a 64-hex user ref", () => {
    const keyed = seen.filter((r) =>
      ["GenerateDataKey", "Decrypt", "Encrypt", "ReEncrypt"].includes(r.operation),
    );
    expect(keyed.filter((r) => r.operation === "GenerateDataKey").length).toBeGreaterThanOrEqual(2);
    const contexts = keyed.flatMap((r) => r.contexts);
    expect(contexts.length).toBe(keyed.length);
    expect(describeLeaks(canaries.scan("KMS encryption contexts", JSON.stringify(contexts)))).toBe("");
    const userContexts = contexts.filter((c) => "user_ref" in c);
    expect(userContexts.length).toBeGreaterThanOrEqual(2);
    for (const context of userContexts) {
      expect(Object.keys(context).sort()).toEqual(["purpose", "user_ref"]);
      expect(context.user_ref).toMatch(/^[0-9a-f]{64}$/);
    }
    // One ref per user, different between users with the same email.
    expect(new Set(userContexts.map((c) => c.user_ref)).size).toBe(2);
    // Any other context (the pepper's) is a purpose alone.
    for (const context of contexts.filter((c) => !("user_ref" in c))) {
      expect(Object.keys(context)).toEqual(["purpose"]);
    }
  });

  it("D38 sends no user identifier anywhere in a KMS request body either", () => {
    expect(seen.length).toBeGreaterThan(0);
    expect(describeLeaks(canaries.scan("KMS requests", seen.map((r) => r.body).join("\n")))).toBe("");
  });
});
