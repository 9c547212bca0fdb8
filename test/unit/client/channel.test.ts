import { readFileSync } from "node:fs";
import { create, toBinary } from "@bufbuild/protobuf";
import { ServerCredentials } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { channelOptionsOf, isLocalAddress } from "../../../client/channel.js";
import {
  createKeybrokerClient,
  credentials,
  InterceptingCall,
  type Interceptor,
  type KeybrokerClient,
  type KeybrokerClientOptions,
  KeybrokerError,
} from "../../../client/keybroker-client.js";
import { ListSecretsResponseSchema } from "../../../src/gen/keybroker/v1/secrets_pb.js";
import { type StubReply, type StubServer, startStubServer } from "../../support/grpc-stub-server.js";
import { createMtlsCertificates, type MtlsCertificates } from "../../support/mtls-certificates.js";

const LIST = "/keybroker.v1.SecretService/ListSecrets";
const LISTED: StubReply = {
  messages: [toBinary(ListSecretsResponseSchema, create(ListSecretsResponseSchema))],
};
const CALLER_KEY = "kbk_test_channel_caller_key";

async function listOnce(options: KeybrokerClientOptions, deadlineMs = 5_000): Promise<unknown> {
  const client = createKeybrokerClient(options);
  try {
    return await client.listSecrets("user-token", {}, { deadlineMs });
  } catch (err) {
    return err;
  } finally {
    client.close();
  }
}

describe("client channel: which addresses get plaintext", () => {
  it("treats a target as local only if every address in it is loopback or a unix socket", () => {
    const local = [
      "127.0.0.1:50051",
      "localhost:50051",
      "[::1]:50051",
      "ipv6:[::1]:50051",
      "unix:/run/keybroker.sock",
      "ipv4:127.0.0.1:1,127.0.0.2:2",
      "dns:localhost:50051",
    ];
    const remote = [
      "keybroker:50051",
      "10.0.0.5:50051",
      "dns:///keybroker-pods.prod.svc.cluster.local:50051",
      "ipv4:127.0.0.1:1,10.0.0.5:1",
      "ipv4:10.0.0.5:1,127.0.0.1:1",
      "127.0.0.1.example.com:50051",
      "ipv6:[::1]:1,[2001:db8::1]:1",
    ];
    expect(local.filter((address) => !isLocalAddress(address))).toEqual([]);
    expect(remote.filter(isLocalAddress)).toEqual([]);
  });

  describe("against a plaintext server on loopback", () => {
    let server: StubServer;

    beforeAll(async () => {
      server = await startStubServer({ [LIST]: { handler: () => LISTED } });
    });

    afterAll(async () => {
      await server?.close();
    });

    it("K203 does not send plaintext to a multi-address target that names one non-loopback address", async () => {
      server.calls.clear();
      // 192.0.2.1 is TEST-NET-1: nothing answers there. With TLS (the default off loopback) the
      // handshake with the plaintext server fails, so the call never arrives.
      const err = await listOnce(
        { address: `ipv4:127.0.0.1:${server.port},192.0.2.1:${server.port}`, callerKey: CALLER_KEY },
        1_000,
      );

      expect(err).toBeInstanceOf(KeybrokerError);
      expect(["UNAVAILABLE", "DEADLINE_EXCEEDED"]).toContain((err as KeybrokerError).code);
      expect(server.calls.get(LIST)).toBeUndefined();
      // The same server over loopback only: plaintext, and it answers.
      expect(await listOnce({ address: `ipv4:127.0.0.1:${server.port}`, callerKey: CALLER_KEY })).toEqual([]);
    });
  });
});

describe("client channel: options", () => {
  it("K204 refuses a grpc.service_config with a retry or hedging policy, which grpc-js would apply to PutSecret too", () => {
    for (const policy of ["retryPolicy", "hedgingPolicy"]) {
      const serviceConfig = JSON.stringify({ methodConfig: [{ name: [{}], [policy]: { maxAttempts: 5 } }] });
      expect(() =>
        createKeybrokerClient({
          address: "127.0.0.1:1",
          callerKey: CALLER_KEY,
          channelOptions: { "grpc.service_config": serviceConfig },
        }),
      ).toThrow(/retry option/);
    }
  });

  it("ignores service configs from DNS unless told otherwise, and sets round_robin as a service config", () => {
    expect(channelOptionsOf({ address: "a:1" })).toEqual({ "grpc.service_config_disable_resolution": 1 });
    expect(channelOptionsOf({ address: "a:1", loadBalancing: "round_robin" })).toEqual({
      "grpc.service_config_disable_resolution": 1,
      "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
    });
    expect(() =>
      channelOptionsOf({
        address: "a:1",
        loadBalancing: "round_robin",
        channelOptions: { "grpc.service_config": "{}" },
      }),
    ).toThrow(TypeError);
  });

  it("refuses contradictory credentials", () => {
    const base = { address: "127.0.0.1:1", callerKey: CALLER_KEY };
    expect(() => createKeybrokerClient({ ...base, tls: { cert: "x" } })).toThrow(/go together/);
    expect(() =>
      createKeybrokerClient({ ...base, tls: {}, credentials: credentials.createInsecure() }),
    ).toThrow(/either credentials or tls/);
    expect(() => createKeybrokerClient({ ...base, defaultDeadlineMs: 0 })).toThrow(TypeError);
  });
});

describe("client channel: load balancing over two replicas", () => {
  let replicas: StubServer[];

  beforeAll(async () => {
    replicas = await Promise.all([1, 2].map(() => startStubServer({ [LIST]: { handler: () => LISTED } })));
  });

  afterAll(async () => {
    await Promise.all(replicas?.map((replica) => replica.close()) ?? []);
  });

  const target = () => `ipv4:${replicas.map((replica) => `127.0.0.1:${replica.port}`).join(",")}`;
  const served = () => replicas.map((replica) => replica.calls.get(LIST) ?? 0);

  it("round_robin spreads calls over every address of the target", async () => {
    for (const replica of replicas) replica.calls.clear();
    const client = createKeybrokerClient({
      address: target(),
      callerKey: CALLER_KEY,
      loadBalancing: "round_robin",
    });
    try {
      // Until both replicas have served a call; bounded, as the second connection may come up later.
      for (let i = 0; i < 200 && served().includes(0); i++) await client.listSecrets("user-token");
    } finally {
      client.close();
    }
    expect(served().every((count) => count > 0)).toBe(true);
  });

  it("pick_first (grpc-js's default) keeps to one replica", async () => {
    for (const replica of replicas) replica.calls.clear();
    const client = createKeybrokerClient({ address: target(), callerKey: CALLER_KEY });
    try {
      for (let i = 0; i < 10; i++) await client.listSecrets("user-token");
    } finally {
      client.close();
    }
    expect(served().sort()).toEqual([0, 10]);
  });
});

describe("client channel: TLS with a private CA and a client certificate", () => {
  let certs: MtlsCertificates;
  let server: StubServer;

  beforeAll(async () => {
    certs = createMtlsCertificates();
    server = await startStubServer(
      { [LIST]: { handler: () => LISTED } },
      ServerCredentials.createSsl(
        Buffer.from(certs.ca),
        [{ private_key: readFileSync(certs.serverKeyFile), cert_chain: readFileSync(certs.serverCertFile) }],
        true,
      ),
    );
  });

  afterAll(async () => {
    await server?.close();
    certs?.remove();
  });

  it("connects with tls { ca, cert, key } to a listener that requires mTLS, and not without the certificate", async () => {
    // By name, as TLS clients should: grpc-js sends the target host as the TLS server name, and
    // Node 26 refuses an IP address there (the certificate names both localhost and 127.0.0.1).
    const address = `localhost:${server.port}`;
    const withCert = await listOnce({
      address,
      callerKey: CALLER_KEY,
      tls: { ca: certs.ca, cert: certs.alice.cert, key: certs.alice.key },
    });
    const withoutCert = await listOnce({ address, callerKey: CALLER_KEY, tls: { ca: certs.ca } }, 2_000);

    expect(withCert).toEqual([]);
    expect(withoutCert).toBeInstanceOf(KeybrokerError);
    expect(server.calls.get(LIST)).toBe(1);
  });
});

describe("client channel: interceptors", () => {
  it("runs the app's interceptors on every call, e.g. to add a trace header", async () => {
    const seen: (string | undefined)[] = [];
    const server = await startStubServer({
      [LIST]: {
        handler: (_attempt, metadata) => {
          seen.push(metadata.get("traceparent")[0]?.toString());
          return LISTED;
        },
      },
    });
    const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const addTrace: Interceptor = (options, nextCall) =>
      new InterceptingCall(nextCall(options), {
        start(metadata, listener, next) {
          metadata.set("traceparent", traceparent);
          next(metadata, listener);
        },
      });
    const client: KeybrokerClient = createKeybrokerClient({
      address: `127.0.0.1:${server.port}`,
      callerKey: CALLER_KEY,
      interceptors: [addTrace],
    });
    try {
      await client.listSecrets("user-token");
      await client.listSecrets("user-token");
    } finally {
      client.close();
      await server.close();
    }
    expect(seen).toEqual([traceparent, traceparent]);
  });
});
