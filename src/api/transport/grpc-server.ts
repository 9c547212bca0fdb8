import { type EventEmitter, once } from "node:events";
import type net from "node:net";
import type { DescMessage, Message } from "@bufbuild/protobuf";
import {
  Metadata,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
  status,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { HealthImplementation } from "grpc-health-check";
import { BrokerError } from "../../errors.js";
import type { Logger } from "../../log/logger.js";
import type { CallEndListener } from "../../observability/call-end.js";
import { statusDetailsOf } from "../error-info.js";
import { REQUEST_ID_HEADER, STATUS_DETAILS_HEADER } from "../wire-headers.js";
import {
  type CallAbort,
  type CallRoute,
  createCallLifecycle,
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  routeOf,
} from "./call-lifecycle.js";
import {
  type ConnectionLimits,
  closeWithoutPreface,
  createLimitedListener,
  DEFAULT_CONNECTION_LIMITS,
  listenOn,
} from "./connection-limits.js";
import type { CallStatus } from "./error-status.js";
import { GrpcCallContext, type GrpcServerCall } from "./grpc-call-context.js";
import { routeGrpcLibraryLogsOnce } from "./grpc-library-logs.js";
import {
  createGrpcServiceDefinition,
  type DecodedRequest,
  encodeResponse,
} from "./grpc-service-definition.js";
import {
  type ServerStreamingHandler,
  type ServiceRegistration,
  streamingHandlerOf,
  type UnaryHandler,
  unaryHandlerOf,
} from "./handlers.js";
import { HEALTH_SERVICE_NAME, healthFileDescriptor } from "./health-descriptor.js";
import { createReflectionService } from "./reflection.js";

/** Dependencies and limits of the grpc-js server. */
export interface GrpcServerOptions {
  readonly services: readonly ServiceRegistration[];
  readonly logger: Logger;
  /** Largest request message accepted; bigger ones get RESOURCE_EXHAUSTED. Default 1 MiB. */
  readonly maxReceiveMessageBytes?: number;
  readonly onCallEnd?: CallEndListener;
  /** Default: plaintext (TLS terminated elsewhere, or loopback). Pass TLS/mTLS credentials here. */
  readonly credentials?: ServerCredentials;
  /** Connections, streams per connection, idle and handshake timeouts (L5). */
  readonly limits?: ConnectionLimits;
}

/** The gRPC edge served by @grpc/grpc-js, with health and reflection. */
export interface GrpcServer {
  /** Binds and starts serving; resolves to the bound port (useful with port 0). */
  listen(host: string, port: number): Promise<number>;
  /** Flips grpc.health.v1 for "" and every registered service. */
  setServing(serving: boolean): void;
  /**
   * NOT_SERVING, stop accepting, let in-flight calls finish for up to `graceMs`, then abort
   * their signals and drop every connection. Idempotent.
   */
  shutdown(graceMs: number): Promise<void>;
}

/** A route plus what only grpc-js needs: the response type it encodes itself. */
interface GrpcRoute extends CallRoute {
  readonly output: DescMessage;
}

/**
 * The main gRPC server. grpc-js costs about a seventh of connect-node's CPU per call, so gRPC
 * clients (the main app) land here; Connect and gRPC-Web clients use connect-server.ts,
 * which mounts the same handlers.
 */
export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const { logger } = options;
  // Security, not style: grpc-js would otherwise print unparsable header values, tokens
  // included, to stderr (see grpc-library-logs.ts). The composition root routes them first;
  // this only covers a server built without it (tests), and never replaces the root's choice.
  routeGrpcLibraryLogsOnce(logger);
  const limits = options.limits ?? DEFAULT_CONNECTION_LIMITS;
  const credentials = options.credentials ?? ServerCredentials.createInsecure();
  const server = new Server({
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
    "grpc.max_concurrent_streams": limits.maxConcurrentStreams,
    // Idle: no call in flight on the connection; grpc-js then sends GOAWAY and closes it.
    "grpc.max_connection_idle_ms": limits.idleTimeoutMs,
  });
  // grpc-js has no connection cap, so it never binds itself: our listener counts connections
  // and injects each into grpc-js, which runs the TLS (handshake bounded by the credentials) and
  // HTTP/2 as it would on its own port.
  const listeners: net.Server[] = [];
  const lifecycle = createCallLifecycle(options);
  const healthWatches = new Set<GrpcServerCall>();

  const serviceNames = options.services.map((registration) => registration.service.typeName);
  const health = new HealthImplementation(statusMap(["", ...serviceNames], "SERVING"));

  for (const registration of options.services) {
    server.addService(createGrpcServiceDefinition(registration.service), implement(registration));
  }
  health.addToServer({
    // Health Watch streams never end on their own; tracking them lets shutdown close them
    // instead of holding every connection open for the whole grace period.
    addService(definition, implementation) {
      const watch = implementation.watch as (call: GrpcServerCall) => void;
      server.addService(definition, {
        ...implementation,
        watch(call: GrpcServerCall) {
          healthWatches.add(call);
          (call as EventEmitter).once("cancelled", () => healthWatches.delete(call));
          watch(call);
        },
      });
    },
  });
  createReflectionService(
    options.services.map((registration) => registration.service),
    { serviceNames: [HEALTH_SERVICE_NAME], fileDescriptorProtos: [healthFileDescriptor()] },
  ).addToServer(server);

  function implement(registration: ServiceRegistration): UntypedServiceImplementation {
    const implementation: UntypedServiceImplementation = {};
    for (const method of registration.service.methods) {
      const route: GrpcRoute = { ...routeOf(method), output: method.output };
      if (method.methodKind === "unary") {
        const handler = unaryHandlerOf(registration, method);
        implementation[method.name] = (
          call: ServerUnaryCall<DecodedRequest, Buffer>,
          callback: sendUnaryData<Buffer>,
        ) => {
          void serveUnary(route, handler, call, callback);
        };
      } else {
        const handler = streamingHandlerOf(registration, method);
        implementation[method.name] = (call: ServerWritableStream<DecodedRequest, Buffer>) => {
          void serveStream(route, handler, call);
        };
      }
    }
    return implementation;
  }

  // Never rejects: every outcome, including a throwing onCallEnd, is handled inside.
  async function serveUnary(
    route: GrpcRoute,
    handler: UnaryHandler<DescMessage, DescMessage>,
    call: ServerUnaryCall<DecodedRequest, Buffer>,
    callback: sendUnaryData<Buffer>,
  ): Promise<void> {
    const ctx = new GrpcCallContext(call);
    const served = lifecycle.start(route, ctx.requestId);
    const untrack = lifecycle.track(ctx);
    let code: number = status.OK;
    try {
      const request = admit(call.request);
      const response = encodeResponse(route.output, await handler(request, ctx));
      call.sendMetadata(requestIdMetadata(ctx.requestId));
      callback(null, response);
    } catch (err) {
      const failure = lifecycle.fail(served, err, abortOf(ctx, call));
      code = failure.code;
      if (!call.cancelled) {
        // Trailers-only answer; the request id rides in it so callers can quote it.
        callback({ code, details: failure.message, metadata: failureMetadata(failure, ctx.requestId) });
      }
    } finally {
      untrack();
      lifecycle.end(served, code);
    }
  }

  async function serveStream(
    route: GrpcRoute,
    handler: ServerStreamingHandler<DescMessage, DescMessage>,
    call: ServerWritableStream<DecodedRequest, Buffer>,
  ): Promise<void> {
    const ctx = new GrpcCallContext(call);
    const served = lifecycle.start(route, ctx.requestId);
    const untrack = lifecycle.track(ctx);
    let code: number = status.OK;
    let headersSent = false;
    try {
      const request = admit(call.request);
      for await (const item of handler(request, ctx)) {
        if (call.cancelled) {
          break; // leaving the loop runs the handler's `finally` via return()
        }
        const bytes = encodeResponse(route.output, item);
        if (!headersSent) {
          call.sendMetadata(requestIdMetadata(ctx.requestId));
          headersSent = true;
        }
        if (!call.write(bytes)) {
          await once(call, "drain", { signal: ctx.signal });
        }
      }
      if (call.cancelled) {
        code = abandonedCode(ctx);
      } else {
        call.end();
      }
    } catch (err) {
      const failure = lifecycle.fail(served, err, abortOf(ctx, call));
      code = failure.code;
      if (!call.cancelled) {
        // grpc-js's documented way to end a server stream with a status.
        call.emit("error", {
          code,
          details: failure.message,
          metadata: failureMetadata(failure, headersSent ? undefined : ctx.requestId),
        });
      }
    } finally {
      untrack();
      lifecycle.end(served, code);
    }
  }

  function admit(request: DecodedRequest): Message {
    if (request instanceof BrokerError) {
      throw request; // undecodable bytes: INVALID_ARGUMENT, see grpc-service-definition.ts
    }
    lifecycle.admit();
    return request;
  }

  function setServing(serving: boolean): void {
    const value = serving ? "SERVING" : "NOT_SERVING";
    for (const name of ["", ...serviceNames]) {
      health.setStatus(name, value);
    }
  }

  function listen(host: string, port: number): Promise<number> {
    const injector = server.createConnectionInjector(credentials);
    const plaintext = !credentials._isSecure();
    const listener = createLimitedListener(limits, (socket) => {
      if (plaintext) closeWithoutPreface(socket, limits.handshakeTimeoutMs);
      injector.injectConnection(socket);
    });
    listeners.push(listener);
    return listenOn(listener, host, port);
  }

  function closeListeners(): void {
    for (const listener of listeners) listener.close();
  }

  function shutdown(graceMs: number): Promise<void> {
    return lifecycle.shutdown(graceMs, {
      stopAccepting() {
        closeListeners();
        setServing(false);
        // After the NOT_SERVING update is written, so watchers see that first: the stream's write
        // runs on a later tick (Node 26 drops a message still queued when the status goes out).
        setImmediate(() => {
          for (const watch of healthWatches) {
            watch.emit("error", { code: status.UNAVAILABLE, details: "server is shutting down" });
          }
        });
      },
      // Both: grpc-js's own view (sessions closed) and ours (every tracked call ended). On Node 26
      // tryShutdown can report done while injected connections still carry calls in flight.
      drain: () =>
        Promise.all([
          new Promise<void>((resolve) => server.tryShutdown(() => resolve())),
          lifecycle.idle(),
        ]).then(() => undefined),
      abortReason: new BrokerError("unavailable", "server is shutting down"),
      close(drainedInTime) {
        if (!drainedInTime) {
          server.forceShutdown();
        }
      },
    });
  }

  return { listen, setServing, shutdown };
}

/** Response metadata carrying only the request id: never anything from the request. */
function requestIdMetadata(requestId: string): Metadata {
  const metadata = new Metadata();
  metadata.set(REQUEST_ID_HEADER, requestId);
  return metadata;
}

/**
 * Trailers of a failed call: the request id unless headers already carried it, and a refusal's
 * reason as a google.rpc.Status with an ErrorInfo detail, the standard gRPC way (see error-info.ts),
 * and a rate limit's RetryInfo.
 */
function failureMetadata(failure: CallStatus, requestId: string | undefined): Metadata {
  const metadata = requestId === undefined ? new Metadata() : requestIdMetadata(requestId);
  if (failure.reason !== undefined || failure.retryAfterMs !== undefined) {
    metadata.set(
      STATUS_DETAILS_HEADER,
      statusDetailsOf(failure.code, failure.message, failure.reason, failure.retryAfterMs),
    );
  }
  return metadata;
}

/** How a cancelled call is recorded: grpc-js reports every end as "cancelled", and nothing more can be sent. */
function abortOf(ctx: GrpcCallContext, call: GrpcServerCall): CallAbort | undefined {
  if (!call.cancelled) {
    return undefined;
  }
  return { status: { code: abandonedCode(ctx), message: "" }, signalReason: ctx.signal.reason, final: true };
}

/** CANCELLED, or DEADLINE_EXCEEDED when the client's deadline is what ended the call. */
function abandonedCode(ctx: GrpcCallContext): status {
  return ctx.deadline !== undefined && Date.now() >= ctx.deadline
    ? status.DEADLINE_EXCEEDED
    : status.CANCELLED;
}

function statusMap(names: readonly string[], value: "SERVING" | "NOT_SERVING"): Record<string, typeof value> {
  return Object.fromEntries(names.map((name) => [name, value]));
}
