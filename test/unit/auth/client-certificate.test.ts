import { execFileSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clientCertificateSha256 } from "../../../src/auth/client-certificate.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { createMtlsCertificates, type MtlsCertificates } from "../../support/mtls-certificates.js";

describe("client certificate fingerprints", () => {
  let certs: MtlsCertificates;

  beforeAll(() => {
    certs = createMtlsCertificates();
  });

  afterAll(() => certs?.remove());

  it("B22 fingerprints a client certificate exactly as `openssl x509 -fingerprint -sha256` does", () => {
    const printed = execFileSync(
      "openssl",
      ["x509", "-noout", "-fingerprint", "-sha256", "-in", certs.alice.certFile],
      {
        encoding: "utf8",
      },
    );
    const expected = Buffer.from(/=([0-9A-F:]+)/.exec(printed)?.[1]?.replaceAll(":", "") ?? "", "hex");
    expect(expected).toHaveLength(32);
    expect(clientCertificateSha256(certs.alice.cert)).toEqual(expected);
    expect(clientCertificateSha256(certs.bob.cert)).not.toEqual(expected);
  });

  it.each([
    ["a CA certificate", () => certs.ca, "a CA certificate"],
    ["an expired certificate", () => certs.expired.cert, "has expired"],
    ["two certificates", () => certs.alice.cert + certs.bob.cert, "exactly one PEM certificate"],
    ["a private key", () => certs.alice.key, "exactly one PEM certificate"],
    [
      "a PEM block that is not a certificate",
      () => "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
      "not a valid X.509 certificate",
    ],
  ])("B22 refuses to bind a caller key to %s", async (_what, pem, message) => {
    const err = await brokerErrorOf(Promise.resolve().then(() => clientCertificateSha256(pem())));
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toContain(message);
  });
});
