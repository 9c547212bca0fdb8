import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import { createSecureContext, type TlsOptions } from "node:tls";
import { ServerCredentials } from "@grpc/grpc-js";
import { pemCertificateBlocks } from "../../auth/client-certificate.js";
import { BrokerError } from "../../errors.js";
import { DEFAULT_CONNECTION_LIMITS } from "./connection-limits.js";

/** PEM files for one listener's TLS. */
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

/** A listener's TLS material, read and checked at start-up. */
export interface ServerTls {
  readonly cert: Buffer;
  readonly key: Buffer;
  /** Set: mTLS, client certificates must chain to these CAs. */
  readonly clientCa: Buffer | undefined;
}

/** Default bound on a TLS handshake: Node's own default (120 s) lets idle half-open sockets pile up. */
export const DEFAULT_HANDSHAKE_TIMEOUT_MS = DEFAULT_CONNECTION_LIMITS.handshakeTimeoutMs;

/**
 * Reads and checks PEM files now, so a bad file fails start-up with a message that names it,
 * rather than the first handshake.
 *
 * With a client CA bundle the TLS handshake itself refuses a missing client certificate, one
 * from another CA, and an expired or not-yet-valid one (catalogue B22): Node's TLS server
 * rejects unauthorized peers whenever it requests a certificate. Such a peer never reaches
 * HTTP/2, so no handler, log line or caller-key lookup runs for it; its client sees
 * UNAVAILABLE, as for any failed connection. Which certificate a caller key needs is the
 * caller authenticator's concern (the binding), not the handshake's.
 */
export async function loadServerTls(files: ServerTlsFiles): Promise<ServerTls> {
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
  return { cert, key, clientCa };
}

/** Node TLS server options for `tls`: mTLS when it has a client CA, handshakes bounded (L5). */
export function nodeTlsOptions(tls: ServerTls, handshakeTimeoutMs: number): TlsOptions {
  return {
    cert: tls.cert,
    key: tls.key,
    handshakeTimeout: handshakeTimeoutMs,
    ...(tls.clientCa === undefined ? {} : { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true }),
  };
}

/**
 * grpc-js credentials for `tls`. `ServerCredentials.createSsl` cannot bound the handshake, and
 * grpc-js hands these constructor options to `http2.createSecureServer` as they are.
 */
class BoundedTlsServerCredentials extends ServerCredentials {
  constructor(tls: ServerTls, handshakeTimeoutMs: number) {
    const { ca, cert, key, ...server } = nodeTlsOptions(tls, handshakeTimeoutMs);
    super(server, { cert, key, ...(ca === undefined ? {} : { ca }) });
  }

  override _equals(other: ServerCredentials): boolean {
    return other === this;
  }
}

/** grpc-js server credentials for `tls` (mTLS with a client CA), handshakes bounded (L5). */
export function grpcServerCredentials(tls: ServerTls, handshakeTimeoutMs: number): ServerCredentials {
  return new BoundedTlsServerCredentials(tls, handshakeTimeoutMs);
}

/** grpc-js server credentials straight from PEM files (see loadServerTls). */
export async function loadServerTlsCredentials(
  files: ServerTlsFiles,
  handshakeTimeoutMs = DEFAULT_HANDSHAKE_TIMEOUT_MS,
): Promise<ServerCredentials> {
  return grpcServerCredentials(await loadServerTls(files), handshakeTimeoutMs);
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
