import http2 from "node:http2";
import { Writable } from "node:stream";
import { setTimeout as delay } from "node:timers/promises";
import {
  Client,
  credentials,
  Metadata,
  makeClientConstructor,
  type ServiceDefinition,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGrpcServer } from "../../../src/api/transport/grpc-server.js";
import { isBrokerError } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import type { CallEndEvent } from "../../../src/observability/call-end.js";
import {
  asServiceError,
  createGrpcClients,
  type GrpcClients,
  serverStream,
  unary,
  type WireMessage,
} from "../../support/grpc-client.js";
import { CANARY, createFakeServices } from "./fake-services.js";

const MAX_BYTES = 4096;
const fakes = createFakeServices();
const logLines: string[] = [];
const callEnds: CallEndEvent[] = [];
const server = createGrpcServer({
  services: fakes.registrations,
  logger: createLogger({
    level: "debug",
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        logLines.push(chunk.toString());
        callback();
      },
    }),
  }),
  maxReceiveMessageBytes: MAX_BYTES,
  onCallEnd: (event) => callEnds.push(event),
});
const HealthClient = makeClientConstructor(healthService as unknown as ServiceDefinition, "Health");
let address = "";
let clients: GrpcClients;
let raw: Client;
let health: Client;

beforeAll(async () => {
  address = `127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
  clients = createGrpcClients(address);
  raw = new Client(address, credentials.createInsecure());
  health = new HealthClient(address, credentials.createInsecure());
});

afterAll(async () => {
  clients.close();
  raw.close();
  health.close();
  await server.shutdown(1000);
});

function lastContext() {
  const ctx = fakes.recorder.contexts.at(-1);
  if (ctx === undefined) {
    throw new Error("no handler was called");
  }
  return ctx;
}

/** Sends `bytes` as the request message, bypassing any serializer. */
function sendRawBytes(path: string, bytes: Buffer): Promise<ServiceError> {
  return new Promise((resolve, reject) => {
    raw.makeUnaryRequest(
      path,
      (value: Buffer) => value,
      (value: Buffer) => value,
      bytes,
      new Metadata(),
      {},
      (err) => (err ? resolve(err) : reject(new Error("call unexpectedly succeeded"))),
    );
  });
}

async function failureOf(call: Promise<unknown>): Promise<ServiceError> {
  try {
    await call;
  } catch (err) {
    return asServiceError(err);
  }
  throw new Error("call unexpectedly succeeded");
}

describe("grpc-js server: request decoding and limits", () => {
  it("answers undecodable request bytes with INVALID_ARGUMENT without calling the handler", async () => {
    const before = fakes.recorder.contexts.length;

    const err = await sendRawBytes(
      "/keybroker.v1.SecretService/ListSecrets",
      Buffer.from([0x0a, 0xff, 0xff]),
    );

    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).toBe("malformed request message");
    expect(fakes.recorder.contexts.length).toBe(before);
  });

  it("answers a request larger than maxReceiveMessageBytes with RESOURCE_EXHAUSTED", async () => {
    const err = await failureOf(
      unary(clients.secrets, "PutSecret", { provider: "p", label: "x".repeat(MAX_BYTES + 1) }),
    );

    expect(err.code).toBe(status.RESOURCE_EXHAUSTED);
  });

  it("accepts a request just under the limit", async () => {
    const { response } = await unary(clients.secrets, "PutSecret", {
      provider: "p",
      label: "x".repeat(MAX_BYTES - 100),
      fields: { api_key: CANARY },
    });

    expect(response.secret).toMatchObject({ provider: "p", fieldNames: ["api_key"] });
    expect(JSON.stringify(response)).not.toContain(CANARY);
  });

  it("answers INTERNAL 'internal error' when the handler's response cannot be encoded", async () => {
    const err = await failureOf(unary(clients.secrets, "ListSecrets", { provider: "bad-response" }));

    expect(err.code).toBe(status.INTERNAL);
    expect(err.details).toBe("internal error");
    expect(JSON.stringify({ details: err.details, md: err.metadata.getMap() })).not.toContain(CANARY);
  });
});

describe("grpc-js server: call context", () => {
  it("F52 sets ctx.deadline from the client's deadline", async () => {
    const before = Date.now();

    await unary(clients.secrets, "ListSecrets", {}, { deadlineMs: 5000 });

    const deadline = lastContext().deadline ?? 0;
    expect(deadline).toBeGreaterThanOrEqual(before + 4000);
    expect(deadline).toBeLessThanOrEqual(Date.now() + 5000);
  });

  it("leaves ctx.deadline undefined when the client sets none", async () => {
    await unary(clients.secrets, "ListSecrets", {});

    expect(lastContext().deadline).toBeUndefined();
  });

  it("F52 aborts ctx.signal with deadline_exceeded when the client's deadline passes", async () => {
    const aborted = fakes.recorder.nextAbort();

    const err = await failureOf(
      unary(clients.secrets, "ListSecrets", { provider: "hang" }, { deadlineMs: 150 }),
    );
    const reason = await aborted;

    expect(err.code).toBe(status.DEADLINE_EXCEEDED);
    expect(isBrokerError(reason) && reason.code).toBe("deadline_exceeded");
  });

  it("aborts ctx.signal when the client cancels", async () => {
    const aborted = fakes.recorder.nextAbort();
    const before = fakes.recorder.contexts.length;
    const call = clients.secrets.makeUnaryRequest(
      "/keybroker.v1.SecretService/ListSecrets",
      (value: Buffer) => value,
      (value: Buffer) => value,
      Buffer.from("0a0468616e67", "hex"), // ListSecretsRequest{provider: "hang"}
      () => {},
    );
    // Cancel once the handler is waiting, not before the request has arrived.
    for (let i = 0; i < 200 && fakes.recorder.contexts.length === before; i++) {
      await delay(5);
    }
    call.cancel();

    const reason = await aborted;
    expect(lastContext().signal.aborted).toBe(true);
    expect(isBrokerError(reason)).toBe(true);
  });

  it("sends x-request-id in the trailers of a failed call", async () => {
    const err = await failureOf(unary(clients.secrets, "ListSecrets", { provider: "fail:not_found" }));

    expect(err.metadata.get("x-request-id")).toEqual([lastContext().requestId]);
  });
});

describe("grpc-js server: onCallEnd", () => {
  it("reports a finished call with its service, method, status and duration", async () => {
    callEnds.length = 0;

    await unary(clients.secrets, "ListSecrets", { provider: "slow:30" });
    await unary(clients.secrets, "DeleteSecret", { secretId: "x" });
    await failureOf(unary(clients.secrets, "ListSecrets", { provider: "fail:permission_denied" }));

    expect(callEnds.map(({ service, method, code }) => ({ service, method, code }))).toEqual([
      { service: "keybroker.v1.SecretService", method: "ListSecrets", code: status.OK },
      { service: "keybroker.v1.SecretService", method: "DeleteSecret", code: status.OK },
      { service: "keybroker.v1.SecretService", method: "ListSecrets", code: status.PERMISSION_DENIED },
    ]);
    expect(callEnds[0]?.durationMs).toBeGreaterThanOrEqual(25);
  });
});

describe("grpc-js server: logging", () => {
  it("logs a caller mistake at info with the request id and without the cause", async () => {
    await failureOf(unary(clients.secrets, "ListSecrets", { provider: "fail:not_found" }));
    const requestId = lastContext().requestId;

    const line = logLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.requestId === requestId);
    expect(line).toMatchObject({
      level: "info",
      method: "keybroker.v1.SecretService/ListSecrets",
      grpcCode: status.NOT_FOUND,
      brokerCode: "not_found",
    });
    expect(JSON.stringify(line)).not.toContain(CANARY);
  });

  it("routes grpc-js's complaint about a malformed header to our logger without the value", async () => {
    const token = `tok\u00e9n-${CANARY}`;
    const session = http2.connect(`http://${address}`);
    const request = session.request({
      ":method": "POST",
      ":path": "/keybroker.v1.SecretService/ListSecrets",
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${token}`,
    });
    request.end(Buffer.from([0, 0, 0, 0, 0]));
    request.resume();
    await new Promise((resolve) => request.once("close", resolve));
    session.close();

    const all = logLines.join("");
    expect(all).toContain('"header":"authorization"');
    expect(all).not.toContain(CANARY);
    expect(lastContext().bearerToken).toBeUndefined();
  });
});

describe("grpc-js server: health", () => {
  it.each(["", "keybroker.v1.SecretService", "keybroker.v1.ProxyService"])(
    "reports '%s' SERVING",
    async (service) => {
      const { response } = await unary(health, "Check", { service });

      expect(response.status).toBe("SERVING");
    },
  );

  it("answers NOT_FOUND for a service it does not serve", async () => {
    const err = await failureOf(unary(health, "Check", { service: "other.v1.Service" }));

    expect(err.code).toBe(status.NOT_FOUND);
  });

  it("tells a watcher SERVING, then NOT_SERVING after setServing(false), then SERVING again", async () => {
    const seen: string[] = [];
    const watch = serverStream(health, "Watch", { service: "" }, {}, (m: WireMessage) =>
      seen.push(String(m.status)),
    );
    watch.catch(() => {}); // the server ends it with UNAVAILABLE at shutdown
    for (let i = 0; i < 100 && seen.length < 1; i++) {
      await delay(10);
    }

    server.setServing(false);
    const checked = await unary(health, "Check", { service: "keybroker.v1.SecretService" });
    server.setServing(true);
    for (let i = 0; i < 100 && seen.length < 3; i++) {
      await delay(10);
    }

    expect(seen).toEqual(["SERVING", "NOT_SERVING", "SERVING"]);
    expect(checked.response.status).toBe("NOT_SERVING");
  });
});
