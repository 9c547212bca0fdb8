import { randomUUID } from "node:crypto";
import type { EventEmitter } from "node:events";
import type { Metadata, ServerUnaryCall, ServerWritableStream } from "@grpc/grpc-js";
import { certificateSha256 } from "../../auth/client-certificate.js";
import { BrokerError } from "../../errors.js";
import { AUTHORIZATION_HEADER, CALLER_KEY_HEADER, DPOP_HEADER, TRACEPARENT_HEADER } from "../wire-headers.js";
import type { CallContext } from "./call-context.js";
import { bearerTokenFrom, callerKeyFrom, dpopProofFrom } from "./credential-headers.js";
import type { DecodedRequest } from "./grpc-service-definition.js";

/** A grpc-js server call of either kind we serve. */
export type GrpcServerCall =
  | ServerUnaryCall<DecodedRequest, Buffer>
  | ServerWritableStream<DecodedRequest, Buffer>;

// Abort reasons are shared: handlers only read their code, and building an Error (with its
// stack) for every finished call would cost more than the rest of the context.
const DEADLINE_PASSED = new BrokerError("deadline_exceeded", "deadline exceeded");
const CALL_ENDED = new BrokerError("unavailable", "call ended");

/**
 * CallContext for a grpc-js call. The AbortController is created only when a handler first
 * reads `signal`; until then `call.cancelled` already records whether it is needed aborted.
 * Like Connect's, the signal also aborts once the call has ended (grpc-js reports every end
 * as "cancelled"), so work tied to it cannot outlive the call.
 */
/** How early a cancellation may arrive and still be the client's deadline passing (see #endReason). */
const DEADLINE_SLACK_MS = 250;

export class GrpcCallContext implements CallContext {
  readonly requestId: string = randomUUID();
  readonly callerKey: string | undefined;
  readonly bearerToken: string | undefined;
  readonly dpopProof: string | undefined;
  readonly deadline: number | undefined;
  readonly #call: GrpcServerCall;
  #controller: AbortController | undefined;
  /** undefined until first read; null once read on a connection without a client certificate. */
  #clientCertSha256: Buffer | null | undefined;

  constructor(call: GrpcServerCall) {
    this.#call = call;
    const metadata = call.metadata;
    this.callerKey = callerKeyFrom(singleValue(metadata, CALLER_KEY_HEADER));
    this.bearerToken = bearerTokenFrom(singleValue(metadata, AUTHORIZATION_HEADER));
    this.dpopProof = dpopProofFrom(singleValue(metadata, DPOP_HEADER));
    const deadline = call.getDeadline();
    const ms = deadline instanceof Date ? deadline.getTime() : deadline;
    this.deadline = Number.isFinite(ms) ? ms : undefined;
  }

  /** Read only when tracing is on: with it off, no call pays for the lookup. */
  get traceparent(): string | undefined {
    return singleValue(this.#call.metadata, TRACEPARENT_HEADER);
  }

  /** "/<package.Service>/<Method>"; read only for DPoP-bound tokens. */
  get rpcPath(): string {
    return this.#call.getPath();
  }

  /**
   * Computed on first read: getAuthContext() parses the whole peer certificate into an object
   * each time, and only caller keys bound to a certificate need it. grpc-js reports a
   * certificate only when the TLS socket is `authorized`, i.e. it verified against the client CA
   * bundle (see tls-credentials.ts).
   */
  get clientCertSha256(): Buffer | undefined {
    if (this.#clientCertSha256 === undefined) {
      const raw = this.#call.getAuthContext().sslPeerCertificate?.raw;
      this.#clientCertSha256 = raw === undefined ? null : certificateSha256(raw);
    }
    return this.#clientCertSha256 ?? undefined;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      if (this.#call.cancelled) {
        controller.abort(this.#endReason());
      } else {
        // Both call kinds are EventEmitters; @types/node 26 no longer unifies their overloads.
        (this.#call as EventEmitter).once("cancelled", () => controller.abort(this.#endReason()));
      }
    }
    return this.#controller.signal;
  }

  /** Aborts the signal with `reason` (server shutdown); later reads see it aborted. */
  abort(reason: unknown): void {
    this.#controller ??= new AbortController();
    this.#controller.abort(reason);
  }

  #endReason(): BrokerError {
    // The server's deadline counts from when the call ARRIVED; the client cancels at ITS deadline,
    // which can land earlier by the request's transit and event-loop delay (seen under CI load).
    return this.deadline !== undefined && Date.now() >= this.deadline - DEADLINE_SLACK_MS
      ? DEADLINE_PASSED
      : CALL_ENDED;
  }
}

/** The header's value if sent exactly once as text; repeated or binary values count as absent. */
function singleValue(metadata: Metadata, key: string): string | undefined {
  const values = metadata.get(key);
  if (values.length !== 1) {
    return undefined;
  }
  const value = values[0];
  return typeof value === "string" ? value : undefined;
}
