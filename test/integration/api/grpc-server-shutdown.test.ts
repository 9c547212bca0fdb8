import { setTimeout as delay } from "node:timers/promises";
import {
  type Client,
  credentials,
  makeClientConstructor,
  type ServiceDefinition,
  type ServiceError,
  status,
} from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import { afterEach, describe, expect, it } from "vitest";
import { createGrpcServer, type GrpcServer } from "../../../src/api/transport/grpc-server.js";
import { isBrokerError } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import {
  asServiceError,
  createGrpcClients,
  type GrpcClients,
  serverStream,
  unary,
  type WireMessage,
} from "../../support/grpc-client.js";
import { createFakeServices, type FakeRecorder } from "./fake-services.js";

const HealthClient = makeClientConstructor(healthService as unknown as ServiceDefinition, "Health");

interface Running {
  server: GrpcServer;
  clients: GrpcClients;
  health: Client;
  recorder: FakeRecorder;
}
let running: Running | undefined;

async function start(): Promise<Running> {
  const fakes = createFakeServices();
  const server = createGrpcServer({
    services: fakes.registrations,
    logger: createLogger({ level: "silent" }),
  });
  const address = `127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
  running = {
    server,
    clients: createGrpcClients(address),
    health: new HealthClient(address, credentials.createInsecure()),
    recorder: fakes.recorder,
  };
  return running;
}

afterEach(async () => {
  if (running !== undefined) {
    running.clients.close();
    running.health.close();
    await running.server.shutdown(100);
    running = undefined;
  }
});

/** Waits (bounded) until the fake handlers have seen `count` calls. */
async function handlerCalls(recorder: FakeRecorder, count: number): Promise<void> {
  for (let i = 0; i < 200 && recorder.contexts.length < count; i++) {
    await delay(5);
  }
  expect(recorder.contexts.length).toBe(count);
}

async function failureOf(call: Promise<unknown>): Promise<ServiceError> {
  try {
    await call;
  } catch (err) {
    return asServiceError(err);
  }
  throw new Error("call unexpectedly succeeded");
}

async function codeOf(call: Promise<unknown>): Promise<number> {
  try {
    await call;
    return status.OK;
  } catch (err) {
    return asServiceError(err).code;
  }
}

describe("grpc-js server shutdown", () => {
  it("F56 lets an in-flight call finish and refuses new calls with UNAVAILABLE", async () => {
    const { server, clients, recorder } = await start();
    const inFlight = unary(clients.secrets, "ListSecrets", { provider: "slow:300" });
    await handlerCalls(recorder, 1);

    const started = Date.now();
    const done = server.shutdown(5000);
    const refused = await codeOf(unary(clients.secrets, "ListSecrets", {}));

    expect((await inFlight).response.secrets).toEqual([expect.objectContaining({ id: "slow" })]);
    expect(refused).toBe(status.UNAVAILABLE);
    await done;
    expect(Date.now() - started).toBeLessThan(2000);
    expect(recorder.contexts.length).toBe(1);
  });

  it("F56 tells health watchers NOT_SERVING, then ends their streams with UNAVAILABLE", async () => {
    const { server, health } = await start();
    const seen: string[] = [];
    const watchEnd = codeOf(
      serverStream(health, "Watch", { service: "" }, {}, (m: WireMessage) => seen.push(String(m.status))),
    );
    for (let i = 0; i < 200 && seen.length < 1; i++) {
      await delay(5);
    }

    await server.shutdown(5000);
    // The stream's end can reach the client after shutdown resolves (Node 26 closes the injected
    // connections' HTTP/2 sessions without waiting for the client to read): wait for it.
    const end = await watchEnd;

    expect(seen).toEqual(["SERVING", "NOT_SERVING"]);
    expect(end).toBe(status.UNAVAILABLE);
  });

  it("aborts handlers still running when the grace period ends, and sends their UNAVAILABLE", async () => {
    const { server, clients, recorder } = await start();
    const aborted = recorder.nextAbort();
    const inFlight = failureOf(unary(clients.secrets, "ListSecrets", { provider: "hang" }));
    await handlerCalls(recorder, 1);

    const started = Date.now();
    await server.shutdown(200);
    const reason = await aborted;

    expect(Date.now() - started).toBeGreaterThanOrEqual(190);
    expect(isBrokerError(reason) && reason.code).toBe("unavailable");
    // The handler rethrew its signal's reason, and there was still time to send it.
    expect(await inFlight).toMatchObject({ code: status.UNAVAILABLE, details: "server is shutting down" });
  });

  it("returns the same promise when shut down twice", async () => {
    const { server } = await start();

    const first = server.shutdown(100);
    const second = server.shutdown(100);

    expect(second).toBe(first);
    await first;
  });
});
