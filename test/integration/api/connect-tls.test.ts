import { X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { type Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createConnectServer } from "../../../src/api/transport/connect-server.js";
import { DEFAULT_CONNECTION_LIMITS } from "../../../src/api/transport/connection-limits.js";
import { loadServerTls, nodeTlsOptions } from "../../../src/api/transport/tls-credentials.js";
import { certificateSha256 } from "../../../src/auth/client-certificate.js";
import { SecretService } from "../../../src/gen/keybroker/v1/secrets_pb.js";
import { createLogger } from "../../../src/log/logger.js";
import { createMtlsCertificates, type MtlsCertificates } from "../../support/mtls-certificates.js";
import { createFakeServices, type FakeRecorder, LISTED_SECRETS } from "./fake-services.js";

/**
 * M3: the Connect/gRPC-Web port carries caller keys and user tokens like the gRPC port, so it
 * takes the same TLS and mTLS configuration (tls-credentials.ts) instead of being plaintext only.
 */
describe("the Connect port over TLS", () => {
  let certs: MtlsCertificates;
  let ca: Buffer;
  const servers: Array<{ shutdown(graceMs: number): Promise<void> }> = [];
  const ports = { tls: 0, mtls: 0 };
  let mtlsRecorder: FakeRecorder;

  beforeAll(async () => {
    certs = createMtlsCertificates();
    ca = readFileSync(certs.caFile);
    const start = async (clientCaFile: string | undefined) => {
      const fakes = createFakeServices();
      const tls = await loadServerTls({
        certFile: certs.serverCertFile,
        keyFile: certs.serverKeyFile,
        ...(clientCaFile === undefined ? {} : { clientCaFile }),
      });
      const server = createConnectServer({
        services: fakes.registrations,
        logger: createLogger({ level: "silent" }),
        tls: nodeTlsOptions(tls, DEFAULT_CONNECTION_LIMITS.handshakeTimeoutMs),
      });
      servers.push(server);
      return { port: await server.listen("127.0.0.1", 0), recorder: fakes.recorder };
    };
    ports.tls = (await start(undefined)).port;
    const mtls = await start(certs.caFile);
    ports.mtls = mtls.port;
    mtlsRecorder = mtls.recorder;
  });

  afterAll(async () => {
    await Promise.all(servers.map((s) => s.shutdown(100)));
    certs.remove();
  });

  const codeOf = (call: Promise<unknown>): Promise<Code | "ok"> =>
    call.then(
      () => "ok" as const,
      (err: unknown) => ConnectError.from(err).code,
    );

  it("G61 M3: serves the Connect protocol over HTTP/1.1 and gRPC over HTTP/2 inside TLS", async () => {
    const baseUrl = `https://127.0.0.1:${ports.tls}`;
    const overH1 = createClient(
      SecretService,
      createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions: { ca } }),
    );
    const overH2 = createClient(SecretService, createGrpcTransport({ baseUrl, nodeOptions: { ca } }));
    expect((await overH1.listSecrets({ provider: "" })).secrets).toHaveLength(
      LISTED_SECRETS.secrets?.length ?? -1,
    );
    expect((await overH2.listSecrets({ provider: "" })).secrets).toHaveLength(
      LISTED_SECRETS.secrets?.length ?? -1,
    );
  });

  it("G61 M3: gives a plaintext client on the TLS port no answer", async () => {
    const plaintext = createClient(
      SecretService,
      createConnectTransport({ baseUrl: `http://127.0.0.1:${ports.tls}`, httpVersion: "1.1" }),
    );
    expect(await codeOf(plaintext.listSecrets({ provider: "" }, { timeoutMs: 5_000 }))).not.toBe("ok");
  });

  it("G61 M3: with a client CA refuses a client without a certificate in the handshake", async () => {
    const anonymous = createClient(
      SecretService,
      createConnectTransport({
        baseUrl: `https://127.0.0.1:${ports.mtls}`,
        httpVersion: "1.1",
        nodeOptions: { ca },
      }),
    );
    const before = mtlsRecorder.contexts.length;
    // TLS 1.3 reports the refusal after the client's side of the handshake: the code varies.
    expect(await codeOf(anonymous.listSecrets({ provider: "" }, { timeoutMs: 5_000 }))).not.toBe("ok");
    expect(mtlsRecorder.contexts.length).toBe(before);
  });

  it("G61 M3: with a client CA hands the verified client certificate's SHA-256 to the call, on HTTP/1.1 and HTTP/2", async () => {
    const expected = certificateSha256(new X509Certificate(certs.alice.cert).raw);
    const nodeOptions = { ca, cert: certs.alice.cert, key: certs.alice.key };
    const baseUrl = `https://127.0.0.1:${ports.mtls}`;
    for (const transport of [
      createConnectTransport({ baseUrl, httpVersion: "1.1", nodeOptions }),
      createGrpcTransport({ baseUrl, nodeOptions }),
    ]) {
      await createClient(SecretService, transport).listSecrets({ provider: "" });
      expect(mtlsRecorder.contexts.at(-1)?.clientCertSha256?.equals(expected)).toBe(true);
    }
  });
});
