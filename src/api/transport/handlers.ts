import type {
  DescMessage,
  DescMethod,
  DescMethodServerStreaming,
  DescMethodUnary,
  DescService,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import type { CallContext } from "./call-context.js";

/** A unary RPC: one decoded request in, one response out. */
export type UnaryHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => Promise<MessageInitShape<O>>;

/** A server-streaming RPC: one decoded request in, responses yielded in order. */
export type ServerStreamingHandler<I extends DescMessage, O extends DescMessage> = (
  request: MessageShape<I>,
  ctx: CallContext,
) => AsyncIterable<MessageInitShape<O>>;

/** The handler type a method descriptor requires; client and bidi streaming are not served. */
export type MethodHandler<M extends DescMethod> =
  M extends DescMethodUnary<infer I, infer O>
    ? UnaryHandler<I, O>
    : M extends DescMethodServerStreaming<infer I, infer O>
      ? ServerStreamingHandler<I, O>
      : never;

/** One handler per RPC of `S`, keyed by the method's localName (e.g. `putSecret`). */
export type ServiceHandlers<S extends DescService> = {
  readonly [K in keyof S["method"]]: MethodHandler<S["method"][K]>;
};

/** A handler with its message types erased; transports look it up by `method.localName`. */
export type AnyHandler =
  | UnaryHandler<DescMessage, DescMessage>
  | ServerStreamingHandler<DescMessage, DescMessage>;

/** A service and its transport-independent handlers, mounted by both the grpc-js and Connect servers. */
export interface ServiceRegistration {
  readonly service: DescService;
  readonly handlers: Readonly<Record<string, AnyHandler>>;
}

/**
 * Pairs a service with its handlers, type-checked per method. Fails at start-up if a method
 * has no handler or uses a streaming kind the transports do not serve, so a half-wired
 * service never reaches a caller.
 */
export function registerService<S extends DescService>(
  service: S,
  handlers: ServiceHandlers<S>,
): ServiceRegistration {
  // The erasure is sound: each transport decodes the request with `method.input` and
  // encodes the response with `method.output`, the very types `ServiceHandlers<S>` checked.
  const erased = handlers as unknown as Readonly<Record<string, unknown>>;
  const checked: Record<string, AnyHandler> = {};
  for (const method of service.methods) {
    if (method.methodKind !== "unary" && method.methodKind !== "server_streaming") {
      throw new Error(`${service.typeName}/${method.name}: ${method.methodKind} RPCs are not supported`);
    }
    const handler = erased[method.localName];
    if (typeof handler !== "function") {
      throw new Error(`${service.typeName}/${method.name}: no handler registered`);
    }
    checked[method.localName] = handler as AnyHandler;
  }
  return { service, handlers: Object.freeze(checked) };
}

/** The unary handler for `method`; registration guarantees it exists. */
export function unaryHandlerOf(
  registration: ServiceRegistration,
  method: DescMethod,
): UnaryHandler<DescMessage, DescMessage> {
  return handlerOf(registration, method) as UnaryHandler<DescMessage, DescMessage>;
}

/** The server-streaming handler for `method`; registration guarantees it exists. */
export function streamingHandlerOf(
  registration: ServiceRegistration,
  method: DescMethod,
): ServerStreamingHandler<DescMessage, DescMessage> {
  return handlerOf(registration, method) as ServerStreamingHandler<DescMessage, DescMessage>;
}

function handlerOf(registration: ServiceRegistration, method: DescMethod): AnyHandler {
  const handler = registration.handlers[method.localName];
  if (handler === undefined) {
    throw new Error(`${registration.service.typeName}/${method.name}: no handler registered`);
  }
  return handler;
}
