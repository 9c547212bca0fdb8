import { setTimeout as delay } from "node:timers/promises";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createConnectServer } from "../../../src/api/transport/connect-server.js";
import { SecretService } from "../../../src/gen/keybroker/v1/secrets_pb.js";
import { createLogger } from "../../../src/log/logger.js";
import type { CallEndEvent } from "../../../src/observability/call-end.js";
import { createFakeServices, type FakeRecorder } from "./fake-services.js";

const MAX_BYTES = 4096;

async function startServer(onCallEnd?: (event: CallEndEvent) => void) {
  const fakes = createFakeServices();
  const server = createConnectServer({
    services: fakes.registrations,
    logger: createLogger({ level: "silent" }),
    maxReceiveMessageBytes: MAX_BYTES,
    ...(onCallEnd === undefined ? {} : { onCallEnd }),
  });
  const baseUrl = `http://127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
  const client = createClient(SecretService, createConnectTransport({ baseUrl, httpVersion: "1.1" }));
  return { server, baseUrl, client, recorder: fakes.recorder };
}

async function connectErrorOf(call: Promise<unknown>): Promise<ConnectError> {
  try {
    await call;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("call unexpectedly succeeded");
}

/** Waits (bounded) until the fake handlers have seen `count` calls. */
async function handlerCalls(recorder: FakeRecorder, count: number): Promise<void> {
  for (let i = 0; i < 200 && recorder.contexts.length < count; i++) {
    await delay(5);
  }
  expect(recorder.contexts.length).toBe(count);
}

describe("connect server", () => {
  const callEnds: CallEndEvent[] = [];
  let running: Awaited<ReturnType<typeof startServer>>;

  beforeAll(async () => {
    running = await startServer((event) => callEnds.push(event));
  });

  afterAll(async () => {
    await running.server.shutdown(1000);
  });

  it("answers a plain HTTP/1.1 JSON POST, as curl would send it", async () => {
    const response = await fetch(`${running.baseUrl}/keybroker.v1.SecretService/ListSecrets`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });

    expect(response.status).toBe(200);
    expect(response.headers.get("x-request-id")).toBe(running.recorder.contexts.at(-1)?.requestId);
    const body = (await response.json()) as { secrets: unknown[] };
    expect(body.secrets[0]).toMatchObject({ id: "sec_1", version: 2, createdAt: "2023-11-14T22:13:20Z" });
  });

  it("rejects undecodable request bytes without calling the handler", async () => {
    const before = running.recorder.contexts.length;

    const response = await fetch(`${running.baseUrl}/keybroker.v1.SecretService/ListSecrets`, {
      method: "POST",
      headers: { "content-type": "application/proto" },
      body: new Uint8Array([0x0a, 0xff, 0xff]),
    });

    // connect-node answers this itself, before our code runs (INTERNAL, see connect-server.ts).
    expect(response.ok).toBe(false);
    expect(running.recorder.contexts.length).toBe(before);
  });

  it("answers a request larger than maxReceiveMessageBytes with RESOURCE_EXHAUSTED", async () => {
    const err = await connectErrorOf(
      running.client.putSecret({ provider: "p", label: "x".repeat(MAX_BYTES + 1) }),
    );

    expect(err.code).toBe(Code.ResourceExhausted);
  });

  it("sets ctx.deadline from the client's timeout", async () => {
    const before = Date.now();

    await running.client.listSecrets({}, { timeoutMs: 5000 });

    const deadline = running.recorder.contexts.at(-1)?.deadline ?? 0;
    expect(deadline).toBeGreaterThanOrEqual(before + 4000);
    expect(deadline).toBeLessThanOrEqual(Date.now() + 5000);
  });

  it("aborts ctx.signal with DEADLINE_EXCEEDED when the request's timeout passes", async () => {
    const aborted = running.recorder.nextAbort();

    // Raw, so that only the server's timer can end the call (a client would race it).
    const response = await fetch(`${running.baseUrl}/keybroker.v1.SecretService/ListSecrets`, {
      method: "POST",
      headers: { "content-type": "application/json", "connect-timeout-ms": "150" },
      body: '{"provider": "hang"}',
    });
    const reason = await aborted;

    expect(await response.json()).toMatchObject({ code: "deadline_exceeded" });
    expect(ConnectError.from(reason).code).toBe(Code.DeadlineExceeded);
  });

  it("aborts ctx.signal when the client gives up", async () => {
    const aborted = running.recorder.nextAbort();
    const before = running.recorder.contexts.length;
    const controller = new AbortController();
    const call = connectErrorOf(
      running.client.listSecrets({ provider: "hang" }, { signal: controller.signal }),
    );
    await handlerCalls(running.recorder, before + 1);

    controller.abort();

    expect((await call).code).toBe(Code.Canceled);
    await aborted;
    expect(running.recorder.contexts.at(-1)?.signal.aborted).toBe(true);
  });

  it("reports finished calls to onCallEnd", async () => {
    callEnds.length = 0;

    await running.client.listSecrets({ provider: "slow:30" });
    await connectErrorOf(running.client.listSecrets({ provider: "fail:not_found" }));

    expect(callEnds.map(({ service, method, code }) => ({ service, method, code }))).toEqual([
      { service: "keybroker.v1.SecretService", method: "ListSecrets", code: 0 },
      { service: "keybroker.v1.SecretService", method: "ListSecrets", code: Code.NotFound },
    ]);
    expect(callEnds[0]?.durationMs).toBeGreaterThanOrEqual(25);
  });
});

describe("connect server shutdown", () => {
  let running: Awaited<ReturnType<typeof startServer>> | undefined;

  afterEach(async () => {
    await running?.server.shutdown(100);
    running = undefined;
  });

  it("lets an in-flight call finish and refuses new calls with UNAVAILABLE", async () => {
    running = await startServer();
    const { server, client, recorder } = running;
    const inFlight = client.listSecrets({ provider: "slow:300" });
    await handlerCalls(recorder, 1);

    const started = Date.now();
    const done = server.shutdown(5000);
    const refused = await connectErrorOf(client.listSecrets({}));

    expect((await inFlight).secrets).toEqual([expect.objectContaining({ id: "slow" })]);
    expect(refused.code).toBe(Code.Unavailable);
    await done;
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("aborts handlers still running when the grace period ends, and sends their UNAVAILABLE", async () => {
    running = await startServer();
    const { server, client, recorder } = running;
    const aborted = recorder.nextAbort();
    const inFlight = connectErrorOf(client.listSecrets({ provider: "hang" }));
    await handlerCalls(recorder, 1);

    const started = Date.now();
    await server.shutdown(200);
    const reason = await aborted;

    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(ConnectError.from(reason).code).toBe(Code.Unavailable);
    // The handler rethrew its signal's reason, and there was still time to send it.
    expect(await inFlight).toMatchObject({ code: Code.Unavailable, rawMessage: "server is shutting down" });
  });

  it("returns the same promise when shut down twice", async () => {
    running = await startServer();

    const first = running.server.shutdown(100);

    expect(running.server.shutdown(100)).toBe(first);
    await first;
  });
});
