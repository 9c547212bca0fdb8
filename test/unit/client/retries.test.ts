import { create, toBinary } from "@bufbuild/protobuf";
import { status } from "@grpc/grpc-js";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  CancelledError,
  createKeybrokerClient,
  type KeybrokerClient,
  type KeybrokerClientOptions,
  KeybrokerError,
  UnavailableError,
} from "../../../client/keybroker-client.js";
import { isSafeHttpMethod, retryPolicyOf } from "../../../client/retry.js";
import { CallResponseSchema, CallStreamResponseSchema } from "../../../src/gen/keybroker/v1/proxy_pb.js";
import { ListSecretsResponseSchema } from "../../../src/gen/keybroker/v1/secrets_pb.js";
import { type StubReply, type StubServer, startStubServer } from "../../support/grpc-stub-server.js";

const LIST = "/keybroker.v1.SecretService/ListSecrets";
const PUT = "/keybroker.v1.SecretService/PutSecret";
const DELETE = "/keybroker.v1.SecretService/DeleteSecret";
const CALL = "/keybroker.v1.ProxyService/Call";
const STREAM = "/keybroker.v1.ProxyService/CallStream";
const SECRET_ID = "00000000-0000-4000-8000-000000000001";

const UNAVAILABLE: StubReply = { error: { code: status.UNAVAILABLE, details: "replica going away" } };
const LISTED: StubReply = {
  messages: [toBinary(ListSecretsResponseSchema, create(ListSecretsResponseSchema))],
};
const CALLED: StubReply = {
  messages: [toBinary(CallResponseSchema, create(CallResponseSchema, { status: 200 }))],
};
const HEAD = toBinary(
  CallStreamResponseSchema,
  create(CallStreamResponseSchema, { part: { case: "head", value: { status: 200 } } }),
);

/** UNAVAILABLE on the first attempt, `then` after it. */
const flaky =
  (then: StubReply) =>
  (attempt: number): StubReply =>
    attempt === 1 ? UNAVAILABLE : then;

/** The rejection of `promise` (which must reject). */
async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error("expected the call to fail");
    },
    (err: unknown) => err,
  );
}

describe("client retries (a real grpc-js server answering UNAVAILABLE on cue)", () => {
  let server: StubServer;
  const clients: KeybrokerClient[] = [];

  beforeAll(async () => {
    server = await startStubServer({
      [LIST]: { handler: flaky(LISTED) },
      [PUT]: { handler: () => UNAVAILABLE },
      [DELETE]: { handler: () => UNAVAILABLE },
      [CALL]: { handler: flaky(CALLED) },
      [STREAM]: {
        streaming: true,
        // The first attempt fails before anything is sent; later ones fail after the head.
        handler: (attempt) => (attempt === 1 ? UNAVAILABLE : { ...UNAVAILABLE, messages: [HEAD] }),
      },
    });
  });

  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
    server.calls.clear();
  });

  afterAll(async () => {
    await server?.close();
  });

  function clientWith(options: Partial<KeybrokerClientOptions> = {}): KeybrokerClient {
    const client = createKeybrokerClient({
      address: `127.0.0.1:${server.port}`,
      callerKey: "kbk_test_retry_caller_key",
      ...options,
    });
    clients.push(client);
    return client;
  }

  const withRetries = () => clientWith({ retry: { maxAttempts: 3, initialBackoffMs: 5, maxBackoffMs: 20 } });

  it("sends every call once when retries are not asked for", async () => {
    const err = await rejectionOf(clientWith().listSecrets("user-token"));

    expect(err).toBeInstanceOf(UnavailableError);
    expect(server.calls.get(LIST)).toBe(1);
  });

  it("retries ListSecrets after UNAVAILABLE when asked to", async () => {
    await expect(withRetries().listSecrets("user-token")).resolves.toEqual([]);
    expect(server.calls.get(LIST)).toBe(2);
  });

  it("K201 never re-sends PutSecret or DeleteSecret, even with retries on: a retry could store a second version", async () => {
    const client = withRetries();

    const put = await rejectionOf(
      client.putSecret("user-token", { provider: "binance", label: "main", fields: { api_key: "k" } }),
    );
    const deleted = await rejectionOf(client.deleteSecret("user-token", SECRET_ID));

    expect(put).toBeInstanceOf(UnavailableError);
    expect(deleted).toBeInstanceOf(UnavailableError);
    expect(server.calls.get(PUT)).toBe(1);
    expect(server.calls.get(DELETE)).toBe(1);
  });

  it("K202 never re-sends a proxied call whose HTTP method is not safe (POST, PUT, PATCH, DELETE); GET is retried", async () => {
    const client = withRetries();

    for (const method of ["POST", "PUT", "PATCH", "DELETE", "post"]) {
      server.calls.clear();
      const err = await rejectionOf(
        client.call("user-token", { secretId: SECRET_ID, method, path: "/order" }),
      );
      expect(err).toBeInstanceOf(UnavailableError);
      expect(server.calls.get(CALL)).toBe(1);
    }
    server.calls.clear();
    const response = await client.call("user-token", {
      secretId: SECRET_ID,
      method: "GET",
      path: "/account",
    });
    expect(response.status).toBe(200);
    expect(server.calls.get(CALL)).toBe(2);
  });

  it("K202 retries a streamed GET only until its first message, and a streamed POST never", async () => {
    const client = withRetries();
    const parts: string[] = [];
    const err = await rejectionOf(
      (async () => {
        for await (const part of client.callStream("user-token", {
          secretId: SECRET_ID,
          method: "GET",
          path: "/big",
        })) {
          parts.push(part.case);
        }
      })(),
    );
    // Attempt 1 failed before the head: retried. Attempt 2 failed after it: not retried again.
    expect(err).toBeInstanceOf(UnavailableError);
    expect(parts).toEqual(["head"]);
    expect(server.calls.get(STREAM)).toBe(2);

    server.calls.clear();
    const post = await rejectionOf(
      (async () => {
        for await (const _ of client.callStream("user-token", {
          secretId: SECRET_ID,
          method: "POST",
          path: "/x",
        })) {
          // nothing arrives
        }
      })(),
    );
    expect(post).toBeInstanceOf(UnavailableError);
    expect(server.calls.get(STREAM)).toBe(1);
  });

  it("keeps every retry within the call's one deadline", async () => {
    const down = await startStubServer({ [LIST]: { handler: () => UNAVAILABLE } });
    const client = createKeybrokerClient({
      address: `127.0.0.1:${down.port}`,
      callerKey: "kbk_test_retry_caller_key",
      // Ten attempts with backoffs of up to 2 s would take seconds; the deadline is 300 ms.
      retry: { maxAttempts: 10, initialBackoffMs: 200, maxBackoffMs: 2_000 },
    });
    try {
      const started = Date.now();
      const err = await rejectionOf(client.listSecrets("user-token", {}, { deadlineMs: 300 }));
      const elapsed = Date.now() - started;

      expect(err).toBeInstanceOf(KeybrokerError);
      expect(["UNAVAILABLE", "DEADLINE_EXCEEDED"]).toContain((err as KeybrokerError).code);
      expect(down.calls.get(LIST)).toBeLessThan(10);
      // Generous for a loaded machine, and far below the ~6.5 s the backoffs alone average.
      expect(elapsed).toBeLessThan(3_000);
    } finally {
      client.close();
      await down.close();
    }
  });

  it("stops waiting to retry when the caller aborts", async () => {
    const down = await startStubServer({ [LIST]: { handler: () => UNAVAILABLE } });
    const client = createKeybrokerClient({
      address: `127.0.0.1:${down.port}`,
      callerKey: "kbk_test_retry_caller_key",
      retry: { maxAttempts: 5, initialBackoffMs: 60_000, maxBackoffMs: 60_000 },
    });
    try {
      const controller = new AbortController();
      const pending = rejectionOf(
        client.listSecrets("user-token", {}, { signal: controller.signal, deadlineMs: 120_000 }),
      );
      // Abort once the first attempt has failed (bounded polling, not a fixed sleep).
      for (let i = 0; i < 500 && down.calls.get(LIST) !== 1; i++) await new Promise((r) => setTimeout(r, 10));
      expect(down.calls.get(LIST)).toBe(1);
      controller.abort();

      expect(await pending).toBeInstanceOf(CancelledError);
      expect(down.calls.get(LIST)).toBe(1);
    } finally {
      client.close();
      await down.close();
    }
  });
});

describe("client retries: policy", () => {
  it("treats only GET, HEAD and OPTIONS as safe to send twice", () => {
    expect(["GET", "head", "OPTIONS"].map(isSafeHttpMethod)).toEqual([true, true, true]);
    expect(["POST", "PUT", "PATCH", "DELETE", "CONNECT", ""].map(isSafeHttpMethod)).toEqual([
      false,
      false,
      false,
      false,
      false,
      false,
    ]);
  });

  it("is off unless asked for, and refuses nonsense limits", () => {
    expect(retryPolicyOf(undefined).maxAttempts).toBe(1);
    expect(retryPolicyOf({}).maxAttempts).toBe(3);
    for (const bad of [
      { maxAttempts: 0 },
      { maxAttempts: 2.5 },
      { maxAttempts: 11 },
      { initialBackoffMs: -1 },
    ]) {
      expect(() => retryPolicyOf(bad)).toThrow(TypeError);
    }
  });
});
