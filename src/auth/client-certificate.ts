import { createHash, X509Certificate } from "node:crypto";
import { BrokerError } from "../errors.js";

/**
 * The one definition of a client certificate's identity for caller-key binding (catalogue B22):
 * SHA-256 over its DER encoding. Binding (CLI) and checking (transport) both go through here,
 * so they cannot disagree on what is hashed.
 */
export function certificateSha256(der: Uint8Array): Buffer {
  return createHash("sha256").update(der).digest();
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g;

/** The PEM certificate blocks in `pem`, in order (X509Certificate itself reads only the first). */
export function pemCertificateBlocks(pem: string): string[] {
  return pem.match(PEM_CERTIFICATE) ?? [];
}

/**
 * The fingerprint of the single client certificate in `pem`, for binding a caller key to it.
 * Refuses what can never authenticate a caller: anything but exactly one certificate, a CA
 * certificate, or one that has already expired. Whether it chains to the server's client CA
 * bundle is the TLS handshake's job, which is where the bundle is configured.
 */
export function clientCertificateSha256(pem: string, now: Date = new Date()): Buffer {
  const blocks = pemCertificateBlocks(pem);
  if (blocks.length !== 1) {
    throw new BrokerError(
      "invalid_argument",
      "the client certificate file must hold exactly one PEM certificate",
    );
  }
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(blocks[0] ?? "");
  } catch (err) {
    throw new BrokerError("invalid_argument", "the client certificate is not a valid X.509 certificate", {
      cause: err,
    });
  }
  if (certificate.ca) {
    throw new BrokerError("invalid_argument", "the client certificate is a CA certificate, not a client's");
  }
  if (new Date(certificate.validTo).getTime() <= now.getTime()) {
    throw new BrokerError("invalid_argument", "the client certificate has expired");
  }
  return certificateSha256(certificate.raw);
}
