import { once } from "node:events";
import { performance } from "node:perf_hooks";
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
import { REQUEST_ID_HEADER } from "./call-context.js";
import { type CallStatus, reportCallFailure } from "./error-status.js";
import { GrpcCallContext, type GrpcServerCall } from "./grpc-call-context.js";
import { routeGrpcLibraryLogs } from "./grpc-library-logs.js";
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
import { settlesWithin } from "./settles-within.js";

/** Dependencies and limits of the grpc-js server. */
export interface GrpcServerOptions {
  readonly services: readonly ServiceRegistration[];
  readonly logger: Logger;
  /** Largest request message accepted; bigger ones get RESOURCE_EXHAUSTED. Default 1 MiB. */
  readonly maxReceiveMessageBytes?: number;
  readonly onCallEnd?: CallEndListener;
  /** Default: plaintext (TLS terminated elsewhere, or loopback). Pass TLS/mTLS credentials here. */
  readonly credentials?: ServerCredentials;
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

const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 1024 * 1024;
/** After the grace period, how long aborted handlers get to send their status. */
const ABORT_FLUSH_MS = 250;

/** What a call needs about its method, resolved once at start-up rather than per call. */
interface Route {
  readonly service: string;
  readonly method: string;
  /** `keybroker.v1.SecretService/PutSecret`, for logs. */
  readonly path: string;
  readonly output: DescMessage;
}

/**
 * The main gRPC server. grpc-js costs about a seventh of connect-node's CPU per call, so gRPC
 * clients (the main app) land here; Connect and gRPC-Web clients use connect-server.ts,
 * which mounts the same handlers.
 */
export function createGrpcServer(options: GrpcServerOptions): GrpcServer {
  const { logger, onCallEnd } = options;
  // Security, not style: grpc-js would otherwise print unparsable header values, tokens
  // included, to stderr (see grpc-library-logs.ts).
  routeGrpcLibraryLogs(logger);
  const server = new Server({
    "grpc.max_receive_message_length": options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  });
  const inFlight = new Set<GrpcCallContext>();
  const healthWatches = new Set<GrpcServerCall>();
  let closing = false;
  let shutdownDone: Promise<void> | undefined;

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
          call.once("cancelled", () => healthWatches.delete(call));
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
      const route: Route = {
        service: registration.service.typeName,
        method: method.name,
        path: `${registration.service.typeName}/${method.name}`,
        output: method.output,
      };
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
    route: Route,
    handler: UnaryHandler<DescMessage, DescMessage>,
    call: ServerUnaryCall<DecodedRequest, Buffer>,
    callback: sendUnaryData<Buffer>,
  ): Promise<void> {
    const started = performance.now();
    const ctx = new GrpcCallContext(call);
    let code: number = status.OK;
    inFlight.add(ctx);
    try {
      const request = admit(call.request);
      const response = encodeResponse(route.output, await handler(request, ctx));
      call.sendMetadata(requestIdMetadata(ctx.requestId));
      callback(null, response);
    } catch (err) {
      const failure = fail(route, ctx, call, err);
      code = failure.code;
      if (!call.cancelled) {
        // Trailers-only answer; the request id rides in it so callers can quote it.
        callback({ code, details: failure.message, metadata: requestIdMetadata(ctx.requestId) });
      }
    } finally {
      inFlight.delete(ctx);
      finish(route, code, started);
    }
  }

  async function serveStream(
    route: Route,
    handler: ServerStreamingHandler<DescMessage, DescMessage>,
    call: ServerWritableStream<DecodedRequest, Buffer>,
  ): Promise<void> {
    const started = performance.now();
    const ctx = new GrpcCallContext(call);
    let code: number = status.OK;
    let headersSent = false;
    inFlight.add(ctx);
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
      const failure = fail(route, ctx, call, err);
      code = failure.code;
      if (!call.cancelled) {
        // grpc-js's documented way to end a server stream with a status.
        call.emit("error", {
          code,
          details: failure.message,
          metadata: headersSent ? new Metadata() : requestIdMetadata(ctx.requestId),
        });
      }
    } finally {
      inFlight.delete(ctx);
      finish(route, code, started);
    }
  }

  /** Logs the failure; returns the status to send (or, if the client gave up, to record). */
  function fail(route: Route, ctx: GrpcCallContext, call: GrpcServerCall, err: unknown): CallStatus {
    if (call.cancelled && isAbortOf(err, ctx)) {
      logger.debug({ requestId: ctx.requestId, method: route.path }, "call abandoned by the client");
      return { code: abandonedCode(ctx), message: "" };
    }
    const result = reportCallFailure(logger, err, { requestId: ctx.requestId, method: route.path });
    return call.cancelled ? { code: abandonedCode(ctx), message: "" } : result;
  }

  function admit(request: DecodedRequest): Message {
    if (request instanceof BrokerError) {
      throw request; // undecodable bytes: INVALID_ARGUMENT, see grpc-service-definition.ts
    }
    if (closing) {
      throw new BrokerError("unavailable", "server is shutting down");
    }
    return request;
  }

  function finish(route: Route, code: number, started: number): void {
    if (onCallEnd === undefined) {
      return;
    }
    try {
      onCallEnd({
        service: route.service,
        method: route.method,
        code,
        durationMs: performance.now() - started,
      });
    } catch (err) {
      logger.error({ err, method: route.path }, "onCallEnd listener threw");
    }
  }

  function setServing(serving: boolean): void {
    const value = serving ? "SERVING" : "NOT_SERVING";
    for (const name of ["", ...serviceNames]) {
      health.setStatus(name, value);
    }
  }

  function listen(host: string, port: number): Promise<number> {
    const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
    return new Promise((resolve, reject) => {
      server.bindAsync(address, options.credentials ?? ServerCredentials.createInsecure(), (err, bound) => {
        if (err) {
          reject(err);
        } else {
          resolve(bound);
        }
      });
    });
  }

  function shutdown(graceMs: number): Promise<void> {
    shutdownDone ??= drainAndClose(graceMs);
    return shutdownDone;
  }

  async function drainAndClose(graceMs: number): Promise<void> {
    closing = true;
    setServing(false);
    for (const watch of healthWatches) {
      // Queued after the NOT_SERVING update, so watchers see that first.
      watch.emit("error", { code: status.UNAVAILABLE, details: "server is shutting down" });
    }
    const drained = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    if (await settlesWithin(drained, graceMs)) {
      return;
    }
    const reason = new BrokerError("unavailable", "server is shutting down");
    for (const ctx of inFlight) {
      ctx.abort(reason);
    }
    // Handlers that honour their signal can still answer UNAVAILABLE before the cut.
    await settlesWithin(drained, ABORT_FLUSH_MS);
    server.forceShutdown();
  }

  return { listen, setServing, shutdown };
}

/** Response metadata carrying only the request id: never anything from the request. */
function requestIdMetadata(requestId: string): Metadata {
  const metadata = new Metadata();
  metadata.set(REQUEST_ID_HEADER, requestId);
  return metadata;
}

/** CANCELLED, or DEADLINE_EXCEEDED when the client's deadline is what ended the call. */
function abandonedCode(ctx: GrpcCallContext): status {
  return ctx.deadline !== undefined && Date.now() >= ctx.deadline
    ? status.DEADLINE_EXCEEDED
    : status.CANCELLED;
}

/** Whether `err` is just the handler giving up because its signal aborted. */
function isAbortOf(err: unknown, ctx: GrpcCallContext): boolean {
  return err === ctx.signal.reason || (err instanceof Error && err.name === "AbortError");
}

function statusMap(names: readonly string[], value: "SERVING" | "NOT_SERVING"): Record<string, typeof value> {
  return Object.fromEntries(names.map((name) => [name, value]));
}
