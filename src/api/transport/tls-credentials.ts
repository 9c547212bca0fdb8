import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createSecureContext } from "node:tls";
import { ServerCredentials } from "@grpc/grpc-js";
import { pemCertificateBlocks } from "../../auth/client-certificate.js";
import { BrokerError } from "../../errors.js";

/** PEM files for the grpc-js port's TLS. */
export interface ServerTlsFiles {
  /** The server's certificate chain, leaf first. */
  readonly certFile: string;
  /** The server certificate's private key. */
  readonly keyFile: string;
  /**
   * CA bundle for client certificates. Set: mTLS, and every connection must present a
   * certificate that chains to one of these CAs (and only these: the system roots are not used).
   */
  readonly clientCaFile?: string;
}

/**
 * grpc-js server credentials from PEM files, checked now so a bad file fails start-up with a
 * message that names it, rather than the first handshake.
 *
 * With a client CA bundle the TLS handshake itself refuses a missing client certificate, one
 * from another CA, and an expired or not-yet-valid one (catalogue B22): Node's TLS server
 * rejects unauthorized peers whenever it requests a certificate. Such a peer never reaches
 * HTTP/2, so no handler, log line or caller-key lookup runs for it; its client sees
 * UNAVAILABLE, as for any failed connection. Which certificate a caller key needs is the
 * caller authenticator's concern (the binding), not the handshake's.
 */
export async function loadServerTlsCredentials(files: ServerTlsFiles): Promise<ServerCredentials> {
  const { certFile, keyFile, clientCaFile } = files;
  const [cert, key, clientCa] = await Promise.all([
    readPem(certFile, "certificate"),
    readPem(keyFile, "private key"),
    clientCaFile === undefined ? undefined : readPem(clientCaFile, "client CA bundle"),
  ]);
  try {
    // Parses the chain and the key and checks they belong together.
    createSecureContext({ cert, key });
  } catch (err) {
    throw new BrokerError(
      "failed_precondition",
      `TLS: ${certFile} and ${keyFile} are not a matching PEM certificate and private key`,
      { cause: err },
    );
  }
  if (clientCa !== undefined) {
    checkCaBundle(clientCa, clientCaFile ?? "");
  }
  return ServerCredentials.createSsl(
    clientCa ?? null,
    [{ cert_chain: cert, private_key: key }],
    clientCa !== undefined,
  );
}

async function readPem(file: string, what: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new BrokerError("failed_precondition", `TLS: cannot read the ${what} file ${file}`, {
      cause: err,
    });
  }
}

/**
 * Node silently ignores a CA bundle with no parsable certificate, which would make every
 * client fail with an unhelpful handshake error; a leaf certificate in the bundle is almost
 * certainly a client certificate given by mistake. Both stop start-up instead.
 */
function checkCaBundle(pem: Buffer, file: string): void {
  const blocks = pemCertificateBlocks(pem.toString("latin1"));
  if (blocks.length === 0) {
    throw new BrokerError(
      "failed_precondition",
      `TLS: the client CA bundle ${file} holds no PEM certificate`,
    );
  }
  for (const block of blocks) {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(block);
    } catch (err) {
      throw new BrokerError(
        "failed_precondition",
        `TLS: the client CA bundle ${file} holds an invalid certificate`,
        {
          cause: err,
        },
      );
    }
    if (!certificate.ca) {
      throw new BrokerError(
        "failed_precondition",
        `TLS: the client CA bundle ${file} holds a certificate that is not a CA (${certificate.subject})`,
      );
    }
  }
}
