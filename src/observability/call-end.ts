/** How go-grpc-prometheus names the kinds of RPC we serve (client and bidi streams are not served). */
export type GrpcMethodType = "unary" | "server_stream";

/** One finished call, for metrics. Names only: never a request field or a header value. */
export interface CallEndEvent {
  /** Fully-qualified service name, e.g. `keybroker.v1.SecretService`. */
  readonly service: string;
  /** Method name as in the proto, e.g. `PutSecret`. */
  readonly method: string;
  /** The `grpc_type` label of the standard gRPC server metrics. */
  readonly type: GrpcMethodType;
  /** gRPC status number sent (or, for a call the client abandoned, CANCELLED / DEADLINE_EXCEEDED). */
  readonly code: number;
  readonly durationMs: number;
}

/** Called once per finished call, on both transports; must not throw and must be cheap. */
export type CallEndListener = (event: CallEndEvent) => void;
