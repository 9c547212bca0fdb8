import { Writable } from "node:stream";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ConnectServer, createConnectServer } from "../../../src/api/transport/connect-server.js";
import { createGrpcServer, type GrpcServer } from "../../../src/api/transport/grpc-server.js";
import type { BrokerErrorCode } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import { CANARY, createFakeServices, LISTED_SECRETS } from "./fake-services.js";
import { connectClient, grpcJsClient, type TransportClient } from "./transport-clients.js";

// Every BrokerErrorCode with the status a caller must see; `satisfies` keeps it exhaustive.
const EXPECTED_STATUS = {
  invalid_argument: status.INVALID_ARGUMENT,
  unauthenticated: status.UNAUTHENTICATED,
  permission_denied: status.PERMISSION_DENIED,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  failed_precondition: status.FAILED_PRECONDITION,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  data_loss: status.DATA_LOSS,
  internal: status.INTERNAL,
} satisfies Record<BrokerErrorCode, status>;
const CODES = Object.entries(EXPECTED_STATUS) as Array<[BrokerErrorCode, status]>;

const TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJl";
const CALLER_KEY = "kb_live_0123456789abcdef";

const fakes = createFakeServices();
const logLines: string[] = [];
const logger = createLogger({
  level: "debug",
  destination: new Writable({
    write(chunk: Buffer, _encoding, callback) {
      logLines.push(chunk.toString());
      callback();
    },
  }),
});
const grpcServer: GrpcServer = createGrpcServer({ services: fakes.registrations, logger });
const connectServer: ConnectServer = createConnectServer({ services: fakes.registrations, logger });

/** Every client/server pair the broker serves; clients are built once the ports are known. */
const TRANSPORTS: ReadonlyArray<{
  name: string;
  create(grpcPort: number, connectPort: number): TransportClient;
}> = [
  {
    name: "grpc-js client -> grpc-js server",
    create: (grpcPort) => grpcJsClient(`127.0.0.1:${grpcPort}`),
  },
  {
    name: "connect-node gRPC client -> grpc-js server",
    create: (grpcPort) => connectClient(`http://127.0.0.1:${grpcPort}`, "grpc", "2"),
  },
  {
    name: "grpc-js client -> connect server (gRPC over h2c)",
    create: (_, connectPort) => grpcJsClient(`127.0.0.1:${connectPort}`),
  },
  {
    name: "Connect protocol over HTTP/1.1 -> connect server",
    create: (_, connectPort) => connectClient(`http://127.0.0.1:${connectPort}`, "connect", "1.1"),
  },
  {
    name: "Connect protocol over HTTP/2 -> connect server",
    create: (_, connectPort) => connectClient(`http://127.0.0.1:${connectPort}`, "connect", "2"),
  },
  {
    name: "gRPC-Web over HTTP/1.1 -> connect server",
    create: (_, connectPort) => connectClient(`http://127.0.0.1:${connectPort}`, "grpc-web", "1.1"),
  },
  {
    name: "gRPC-Web over HTTP/2 -> connect server",
    create: (_, connectPort) => connectClient(`http://127.0.0.1:${connectPort}`, "grpc-web", "2"),
  },
];
const clients = new Map<string, TransportClient>();

beforeAll(async () => {
  const grpcPort = await grpcServer.listen("127.0.0.1", 0);
  const connectPort = await connectServer.listen("127.0.0.1", 0);
  for (const transport of TRANSPORTS) {
    clients.set(transport.name, transport.create(grpcPort, connectPort));
  }
});

afterAll(async () => {
  for (const client of clients.values()) {
    client.close();
  }
  await Promise.all([grpcServer.shutdown(1000), connectServer.shutdown(1000)]);
});

function lastContext() {
  const ctx = fakes.recorder.contexts.at(-1);
  if (ctx === undefined) {
    throw new Error("no handler was called");
  }
  return ctx;
}

describe.each(TRANSPORTS.map((transport) => transport.name))("%s", (name) => {
  // Resolved per test: clients only exist once beforeAll has bound the ports.
  const client = () => {
    const found = clients.get(name);
    if (found === undefined) {
      throw new Error(`no client ${name}`);
    }
    return found;
  };

  it("returns the same response as every other transport", async () => {
    const outcome = await client().listSecrets("");

    expect(outcome).toMatchObject({
      ok: true,
      value: [
        {
          id: "sec_1",
          provider: "binance",
          label: "main",
          version: 2,
          fieldNames: ["api_key", "api_secret"],
          hint: "…a9F3",
          createdAtSeconds: "1700000000",
        },
        { id: "sec_2", provider: "stripe", label: "ops", version: 1, fieldNames: ["api_key"], hint: "" },
      ],
    });
    expect(LISTED_SECRETS.secrets).toHaveLength(2);
  });

  it("returns the handler's request id in x-request-id", async () => {
    const outcome = await client().listSecrets("");

    expect(outcome.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(outcome.requestId).toBe(lastContext().requestId);
  });

  it("gives every call a different request id", async () => {
    const first = await client().listSecrets("");
    const second = await client().listSecrets("");

    expect(first.requestId).not.toBe(second.requestId);
  });

  it("hands the caller key and bearer token to the handler", async () => {
    await client().listSecrets("", [
      ["x-keybroker-key", CALLER_KEY],
      ["authorization", `Bearer ${TOKEN}`],
    ]);

    expect(lastContext()).toMatchObject({ callerKey: CALLER_KEY, bearerToken: TOKEN });
  });

  it("accepts the bearer scheme in any case", async () => {
    await client().listSecrets("", [["authorization", `bEaReR ${TOKEN}`]]);

    expect(lastContext().bearerToken).toBe(TOKEN);
  });

  it("leaves both credentials undefined when none are sent", async () => {
    await client().listSecrets("");

    expect(lastContext()).toMatchObject({ callerKey: undefined, bearerToken: undefined });
  });

  it.each([
    ["another scheme", `Basic ${TOKEN}`],
    ["no token", "Bearer"],
    ["two tokens", `Bearer ${TOKEN} ${TOKEN}`],
    ["no space", `Bearer${TOKEN}`],
  ])("treats a malformed authorization header (%s) as no token", async (_case, value) => {
    await client().listSecrets("", [["authorization", value]]);

    expect(lastContext().bearerToken).toBeUndefined();
  });

  it("treats a repeated authorization header as no token", async () => {
    await client().listSecrets("", [
      ["authorization", `Bearer ${TOKEN}`],
      ["authorization", "Bearer other"],
    ]);

    expect(lastContext().bearerToken).toBeUndefined();
  });

  it("treats a repeated x-keybroker-key as no caller key", async () => {
    await client().listSecrets("", [
      ["x-keybroker-key", CALLER_KEY],
      ["x-keybroker-key", "kb_live_other"],
    ]);

    expect(lastContext().callerKey).toBeUndefined();
  });

  it.each(CODES)(
    "F51 maps BrokerError %s to gRPC status %i with its safe message",
    async (code, expected) => {
      const outcome = await client().listSecrets(`fail:${code}`);

      expect(outcome).toMatchObject({ ok: false, code: expected, message: `safe message for ${code}` });
      expect(outcome.requestId).toBe(lastContext().requestId);
      expect(outcome.ok || outcome.dump).not.toContain(CANARY);
    },
  );

  it("F51 answers INTERNAL 'internal error' for an unexpected error and reveals nothing of it", async () => {
    const outcome = await client().listSecrets("crash");

    expect(outcome).toMatchObject({ ok: false, code: status.INTERNAL, message: "internal error" });
    expect(outcome.ok || outcome.dump).not.toContain(CANARY);
    expect(outcome.ok || outcome.dump).not.toContain("database said");
  });

  it.each([
    ["caller_key_missing", status.UNAUTHENTICATED, "caller_key"],
    ["caller_key_invalid", status.UNAUTHENTICATED, "caller_key"],
    ["caller_key_scope_missing", status.PERMISSION_DENIED, "caller_key"],
    ["token_missing", status.UNAUTHENTICATED, "access_token"],
    ["token_expired", status.UNAUTHENTICATED, "access_token"],
    ["token_permission_missing", status.PERMISSION_DENIED, "access_token"],
  ] as const)(
    "sends a refused credential's reason %s as a google.rpc.ErrorInfo detail",
    async (reason, code, credential) => {
      const outcome = await client().listSecrets(`refuse:${reason}`);

      expect(outcome).toMatchObject({
        ok: false,
        code,
        errorInfo: { reason: reason.toUpperCase(), domain: "keybroker", metadata: { credential } },
      });
      expect(outcome.ok || outcome.dump).not.toContain(CANARY);
    },
  );

  it("sends a refusal's ErrorInfo detail when a stream is refused before its first message", async () => {
    const outcome = await client().callStream("/refuse", "");

    expect(outcome).toMatchObject({
      ok: false,
      code: status.UNAUTHENTICATED,
      errorInfo: {
        reason: "CALLER_KEY_INVALID",
        domain: "keybroker",
        metadata: { credential: "caller_key" },
      },
    });
  });

  it("sends no ErrorInfo detail for a failure that is not a refusal", async () => {
    const outcome = await client().listSecrets("fail:not_found");

    expect(outcome).toMatchObject({ ok: false, code: status.NOT_FOUND, errorInfo: undefined });
  });

  it("streams the head, then the body in chunks", async () => {
    const outcome = await client().callStream("/v1/data", "0123456789");

    expect(outcome).toMatchObject({
      ok: true,
      value: { parts: ["head", "chunk", "chunk", "chunk"], status: 200, body: "0123456789" },
    });
    expect(outcome.requestId).toBe(lastContext().requestId);
  });

  it("ends a stream with the handler's status after the messages already sent", async () => {
    const { parts, outcome } = await client().callStreamPartial("/fail-after-head", "abc");

    expect(parts).toEqual(["head"]);
    expect(outcome).toMatchObject({ ok: false, code: status.UNAVAILABLE, message: "upstream went away" });
    expect(outcome.ok || outcome.dump).not.toContain(CANARY);
  });
});

describe("logs across all transports", () => {
  it("never contain the bearer token or the caller key", () => {
    const all = logLines.join("");

    expect(logLines.length).toBeGreaterThan(0);
    expect(all).not.toContain(TOKEN);
    expect(all).not.toContain(CALLER_KEY);
  });

  it("record an unexpected error at error level with its request id", () => {
    const lines = logLines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const crashes = lines.filter((line) => line.level === "error" && line.brokerCode === undefined);

    expect(crashes.length).toBe(TRANSPORTS.length);
    for (const line of crashes) {
      expect(line.requestId).toMatch(/^[0-9a-f-]{36}$/);
      expect(line.method).toBe("keybroker.v1.SecretService/ListSecrets");
    }
  });
});
