import { inspect } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  AlreadyExistsError,
  type CallStreamPart,
  CancelledError,
  createKeybrokerClient,
  DeadlineExceededError,
  InvalidArgumentError,
  type KeybrokerClient,
  KeybrokerError,
  NotFoundError,
  PermissionDeniedError,
  UnauthenticatedError,
  UnavailableError,
} from "../../client/keybroker-client.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";

const ALICE = "google-oauth2|client-e2e-alice-canary-5150";
const BOB = "facebook|client-e2e-bob-canary-6160";
const UNKNOWN_ID = "00000000-0000-4000-8000-000000000000";

describe("Keybroker client against the real broker", () => {
  let broker: BrokerHarness;
  let client: KeybrokerClient;
  let appKey: string;
  let aliceToken: string;
  let bobToken: string;
  let secretId: string;
  // Every credential a test handed to the client, and every error it got back: checked at the end.
  const credentials: string[] = [];
  const errors: KeybrokerError[] = [];

  beforeAll(async () => {
    broker = await startBroker("pglite");
    appKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    aliceToken = await broker.tokenFor(ALICE);
    bobToken = await broker.tokenFor(BOB);
    credentials.push(appKey, aliceToken, bobToken);
    client = createKeybrokerClient({ address: broker.grpcAddress, callerKey: appKey });
    const stored = await client.putSecret(aliceToken, {
      provider: "test-upstream",
      label: "saas",
      fields: { token: broker.upstreamCredentials.bearer },
    });
    secretId = stored.id;
  });

  afterAll(async () => {
    client?.close();
    await broker?.close();
  });

  /** The rejection of `promise`, which must be a KeybrokerError; kept for the leak check. */
  async function failure(promise: Promise<unknown>): Promise<KeybrokerError> {
    const err = await promise.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(KeybrokerError);
    errors.push(err as KeybrokerError);
    return err as KeybrokerError;
  }

  const text = (bytes: Uint8Array) => Buffer.from(bytes).toString("utf8");

  describe("calls", () => {
    it("stores a credential and returns its metadata with Date timestamps, never the value", async () => {
      const info = await client.putSecret(aliceToken, {
        provider: "test-upstream",
        label: "second",
        fields: { token: "CANARY-client-put-value-1234" },
      });
      expect(info).toMatchObject({
        provider: "test-upstream",
        label: "second",
        version: 1,
        fieldNames: ["token"],
        hint: "…1234",
      });
      expect(info.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(info.createdAt).toBeInstanceOf(Date);
      expect(info.lastUsedAt).toBeUndefined();
      expect(JSON.stringify(info)).not.toContain("CANARY-client-put-value");
    });

    it("adds a version when putSecret is given the id of an existing secret", async () => {
      const first = await client.putSecret(aliceToken, {
        provider: "test-upstream",
        label: "versioned",
        fields: { token: "first-value-aaaa" },
      });
      const second = await client.putSecret(aliceToken, {
        secretId: first.id,
        provider: "test-upstream",
        label: "versioned",
        fields: { token: "second-value-bbbb" },
      });
      expect(second).toMatchObject({ id: first.id, version: 2, hint: "…bbbb" });
    });

    it("lists only the token's user's secrets, filtered by provider when asked", async () => {
      const mine = await client.listSecrets(aliceToken);
      expect(mine.map((s) => s.id)).toContain(secretId);
      expect(await client.listSecrets(aliceToken, { provider: "binance" })).toEqual([]);
      expect(await client.listSecrets(bobToken)).toEqual([]);
    });

    it("makes a proxied call and returns the status, headers and body bytes", async () => {
      const response = await client.call(aliceToken, { secretId, method: "GET", path: "/ok" });
      expect(response.status).toBe(200);
      expect(response.body).toBeInstanceOf(Uint8Array);
      expect(JSON.parse(text(response.body))).toEqual({ ok: true, method: "GET" });
      expect(response.headers.find((h) => h.name === "content-type")?.value).toContain("application/json");
    });

    it("returns an echoing provider's response with the key scrubbed", async () => {
      const response = await client.call(aliceToken, { secretId, method: "GET", path: "/echo" });
      const body = text(response.body);
      expect(body).toContain("[REDACTED]");
      expect(findLeaks(body + JSON.stringify(response.headers), [broker.upstreamCredentials.bearer])).toEqual(
        [],
      );
    });

    it("streams a response as a head and then body chunks", async () => {
      const parts: CallStreamPart[] = [];
      for await (const part of client.callStream(aliceToken, {
        secretId,
        method: "GET",
        path: "/echo-chunked",
      })) {
        parts.push(part);
      }
      const [head, ...chunks] = parts;
      expect(head?.case === "head" && head.value.status).toBe(200);
      expect(chunks.length).toBeGreaterThan(0);
      const body = Buffer.concat(
        chunks.map((p) => (p.case === "chunk" ? p.value : new Uint8Array())),
      ).toString();
      expect(body).toMatch(/^start \[REDACTED\] middle \[REDACTED\] end$/);
    });

    it("cancels a stream when the consumer stops reading, so the broker drops the upstream", async () => {
      broker.upstream.reset();
      const seen: string[] = [];
      for await (const part of client.callStream(aliceToken, {
        secretId,
        method: "GET",
        path: "/slow-drip",
      })) {
        seen.push(part.case);
        break; // the drip never ends: only a cancel stops it
      }
      expect(seen).toEqual(["head"]);
      expect(await eventually(() => broker.upstream.abandonedResponses() > 0)).toBe(true);
    });

    it("cancels a call when its AbortSignal fires, with a CancelledError", async () => {
      broker.upstream.reset();
      const controller = new AbortController();
      const pending = client.call(
        aliceToken,
        { secretId, method: "GET", path: "/slow-drip" },
        { signal: controller.signal },
      );
      setTimeout(() => controller.abort(), 100);
      expect(await failure(pending)).toBeInstanceOf(CancelledError);
      expect(await eventually(() => broker.upstream.abandonedResponses() > 0)).toBe(true);
    });

    it("does not start a call whose AbortSignal has already fired", async () => {
      broker.upstream.reset();
      const err = await failure(
        client.call(aliceToken, { secretId, method: "GET", path: "/ok" }, { signal: AbortSignal.abort() }),
      );
      expect(err).toBeInstanceOf(CancelledError);
      expect(broker.upstream.requests).toHaveLength(0);
    });

    it("deletes a secret, after which using it is NOT_FOUND", async () => {
      const doomed = await client.putSecret(aliceToken, {
        provider: "test-upstream",
        label: "doomed",
        fields: { token: "doomed-value-cccc" },
      });
      await client.deleteSecret(aliceToken, doomed.id);
      expect((await client.listSecrets(aliceToken)).map((s) => s.id)).not.toContain(doomed.id);
      const err = await failure(client.call(aliceToken, { secretId: doomed.id, method: "GET", path: "/ok" }));
      expect(err).toBeInstanceOf(NotFoundError);
    });
  });

  describe("errors", () => {
    it("raises InvalidArgumentError with the request id for an unknown provider", async () => {
      const err = await failure(
        client.putSecret(aliceToken, { provider: "no-such-provider", label: "x", fields: { token: "t" } }),
      );
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err).toMatchObject({ code: "INVALID_ARGUMENT", name: "InvalidArgumentError" });
      expect(err.requestId).toMatch(/^[0-9a-f-]{36}$/);
    });

    it("raises InvalidArgumentError for a path that leaves the provider's base URL", async () => {
      const err = await failure(client.call(aliceToken, { secretId, method: "GET", path: "/../binance/x" }));
      expect(err).toBeInstanceOf(InvalidArgumentError);
      expect(err.requestId).toBeDefined();
    });

    it("raises UnauthenticatedError for the user's token when it has expired", async () => {
      const expired = await broker.tokenFor(ALICE, { exp: Math.floor(Date.now() / 1000) - 600 });
      credentials.push(expired);
      const err = await failure(client.listSecrets(expired));
      expect(err).toBeInstanceOf(UnauthenticatedError);
      expect((err as UnauthenticatedError).credential).toBe("user_token");
      expect((err as UnauthenticatedError).reason).toBe("token_expired");
      expect(err.requestId).toBeDefined();
    });

    it("raises UnauthenticatedError for the user's token when none is given", async () => {
      const err = await failure(client.listSecrets(""));
      expect(err).toBeInstanceOf(UnauthenticatedError);
      expect((err as UnauthenticatedError).credential).toBe("user_token");
      expect((err as UnauthenticatedError).reason).toBe("token_missing");
    });

    it("refuses a token that is not a valid header value without quoting it", async () => {
      const bad = `${aliceToken}\r\nx-injected: 1`;
      credentials.push(bad);
      const err = await failure(client.listSecrets(bad));
      expect(err).toBeInstanceOf(UnauthenticatedError);
      expect(err.requestId).toBeUndefined();
    });

    it("raises UnauthenticatedError for the caller key, not the user, when the app's key is revoked", async () => {
      const revoked = await broker.callerKey(["secrets:read"]);
      credentials.push(revoked.key);
      await broker.revokeCallerKey(revoked.id);
      const revokedClient = createKeybrokerClient({ address: broker.grpcAddress, callerKey: revoked.key });
      try {
        const err = await failure(revokedClient.listSecrets(aliceToken));
        expect(err).toBeInstanceOf(UnauthenticatedError);
        expect((err as UnauthenticatedError).credential).toBe("caller_key");
        // Revoked, unknown and expired keys look alike to the caller (catalogue B20).
        expect((err as UnauthenticatedError).reason).toBe("caller_key_invalid");
      } finally {
        revokedClient.close();
      }
    });

    it("raises PermissionDeniedError when the caller key lacks the scope", async () => {
      const readOnly = (await broker.callerKey(["secrets:read"])).key;
      credentials.push(readOnly);
      const readOnlyClient = createKeybrokerClient({ address: broker.grpcAddress, callerKey: readOnly });
      try {
        const err = await failure(readOnlyClient.deleteSecret(aliceToken, secretId));
        expect(err).toBeInstanceOf(PermissionDeniedError);
        expect((err as PermissionDeniedError).reason).toBe("caller_key_scope_missing");
        expect(err.requestId).toBeDefined();
      } finally {
        readOnlyClient.close();
      }
      expect((await client.listSecrets(aliceToken)).map((s) => s.id)).toContain(secretId);
    });

    it("raises NotFoundError for another user's secret id, exactly as for an unknown one", async () => {
      const others = await failure(client.call(bobToken, { secretId, method: "GET", path: "/ok" }));
      const unknown = await failure(
        client.call(bobToken, { secretId: UNKNOWN_ID, method: "GET", path: "/ok" }),
      );
      expect(others).toBeInstanceOf(NotFoundError);
      expect(unknown).toBeInstanceOf(NotFoundError);
      expect(others.message).toBe(unknown.message);
      expect(await failure(client.deleteSecret(bobToken, secretId))).toBeInstanceOf(NotFoundError);
    });

    it("raises AlreadyExistsError for a second secret with the same provider and label", async () => {
      const err = await failure(
        client.putSecret(aliceToken, { provider: "test-upstream", label: "saas", fields: { token: "dupe" } }),
      );
      expect(err).toBeInstanceOf(AlreadyExistsError);
      expect(err.requestId).toBeDefined();
    });

    it("raises DeadlineExceededError when the upstream hangs past deadlineMs", async () => {
      const started = Date.now();
      const err = await failure(
        client.call(aliceToken, { secretId, method: "GET", path: "/hang" }, { deadlineMs: 300 }),
      );
      expect(err).toBeInstanceOf(DeadlineExceededError);
      expect(Date.now() - started).toBeLessThan(2_000);
    });

    it("raises DeadlineExceededError for a stream that outlives its deadline", async () => {
      const read = async () => {
        for await (const _part of client.callStream(
          aliceToken,
          { secretId, method: "GET", path: "/slow-drip" },
          { deadlineMs: 300 },
        )) {
          // drain until the deadline ends the stream
        }
      };
      expect(await failure(read())).toBeInstanceOf(DeadlineExceededError);
    });

    it("never puts a token or caller key in any error it raised", () => {
      expect(errors.length).toBeGreaterThanOrEqual(12);
      const everything = errors.map((e) => `${inspect(e, { depth: 5 })}\n${JSON.stringify(e)}`).join("\n");
      expect(findLeaks(everything, credentials)).toEqual([]);
    });
  });
});

describe("Keybroker client when the broker is gone", () => {
  it("raises UnavailableError after the broker stops, so the app can retry later", async () => {
    // A short grace: the client's idle connection would otherwise hold shutdown for the default.
    const broker = await startBroker("pglite", { KEYBROKER_SHUTDOWN_GRACE_MS: "100" });
    const key = (await broker.callerKey(["secrets:read"])).key;
    const token = await broker.tokenFor(ALICE);
    const client = createKeybrokerClient({ address: broker.grpcAddress, callerKey: key });
    try {
      expect(await client.listSecrets(token)).toEqual([]);
      await broker.close();
      const err = await client.listSecrets(token).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(UnavailableError);
      expect(findLeaks(inspect(err, { depth: 5 }), [key, token])).toEqual([]);
    } finally {
      client.close();
      await broker.close();
    }
  });
});

/** Polls `check` every 20 ms for up to 2 s: for effects the broker finishes after answering. */
async function eventually(check: () => boolean): Promise<boolean> {
  for (let attempt = 0; attempt < 100; attempt++) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return check();
}
