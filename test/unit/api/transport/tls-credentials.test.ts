import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ServerCredentials } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadServerTlsCredentials } from "../../../../src/api/transport/tls-credentials.js";
import { brokerErrorOf } from "../../../support/broker-errors.js";
import { createMtlsCertificates, type MtlsCertificates } from "../../../support/mtls-certificates.js";

describe("server TLS credentials", () => {
  let certs: MtlsCertificates;

  beforeAll(() => {
    certs = createMtlsCertificates();
  });

  afterAll(() => certs?.remove());

  it("loads a matching certificate and key, with and without a client CA bundle", async () => {
    const files = { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile };
    expect(await loadServerTlsCredentials(files)).toBeInstanceOf(ServerCredentials);
    expect(await loadServerTlsCredentials({ ...files, clientCaFile: certs.caFile })).toBeInstanceOf(
      ServerCredentials,
    );
  });

  it("fails start-up when the private key belongs to another certificate", async () => {
    const err = await brokerErrorOf(
      loadServerTlsCredentials({ certFile: certs.serverCertFile, keyFile: join(certs.dir, "alice.key") }),
    );
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toContain("not a matching PEM certificate and private key");
  });

  it("fails start-up naming a file it cannot read", async () => {
    const missing = join(certs.dir, "missing.pem");
    const err = await brokerErrorOf(
      loadServerTlsCredentials({
        certFile: certs.serverCertFile,
        keyFile: certs.serverKeyFile,
        clientCaFile: missing,
      }),
    );
    expect(err).toMatchObject({ code: "failed_precondition" });
    expect(err.message).toContain(missing);
  });

  it.each([
    ["no certificate", "not a certificate\n"],
    ["a client certificate instead of a CA", () => certs.alice.cert],
  ])("B22 fails start-up when the client CA bundle holds %s", async (_what, content) => {
    const bundle = join(certs.dir, "bundle.pem");
    writeFileSync(bundle, typeof content === "string" ? content : content());
    const err = await brokerErrorOf(
      loadServerTlsCredentials({
        certFile: certs.serverCertFile,
        keyFile: certs.serverKeyFile,
        clientCaFile: bundle,
      }),
    );
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toContain(bundle);
  });
});
