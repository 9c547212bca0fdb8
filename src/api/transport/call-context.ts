/**
 * What a handler knows about the call, independent of transport (grpc-js or Connect).
 * Credentials are raw header values; handlers pass them to the auth layer and never log them.
 */
export interface CallContext {
  /** Random id for correlating logs and audit rows; echoed to the caller as `x-request-id`. */
  readonly requestId: string;
  /** Value of the `x-keybroker-key` metadata, if present. */
  readonly callerKey: string | undefined;
  /** Token from `authorization: Bearer <token>`, if present. */
  readonly bearerToken: string | undefined;
  /** The `dpop` metadata (a DPoP proof, RFC 9449), if exactly one well-formed value was sent. */
  readonly dpopProof?: string | undefined;
  /**
   * The W3C `traceparent` metadata, if sent exactly once; read only when tracing is on, and then
   * only parsed for its ids (tracing.ts), never logged or recorded.
   */
  readonly traceparent?: string | undefined;
  /** "/<package.Service>/<Method>", the path every transport POSTs the call to. */
  readonly rpcPath?: string | undefined;
  /** Aborted when the client cancels, the deadline passes or the server shuts down. */
  readonly signal: AbortSignal;
  /** Client deadline as epoch ms, if the client set one. */
  readonly deadline: number | undefined;
  /**
   * SHA-256 of the client certificate (DER) when the connection is mTLS and the handshake
   * verified it against the client CA bundle; undefined on plaintext or server-only TLS.
   */
  readonly clientCertSha256: Buffer | undefined;
}
