import { randomUUID } from "node:crypto";
import { performance } from "node:perf_hooks";
import type {
  DescMessage,
  DescMethodServerStreaming,
  DescMethodUnary,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import { BrokerError } from "../../errors.js";
import type { Logger } from "../../log/logger.js";
import type { CallEndListener } from "../../observability/call-end.js";
import { CALLER_KEY_HEADER, type CallContext, REQUEST_ID_HEADER } from "./call-context.js";
import { createCleartextHttpServer } from "./cleartext-http-server.js";
import { bearerTokenFrom, callerKeyFrom } from "./credential-headers.js";
import { type CallStatus, reportCallFailure } from "./error-status.js";
import {
  type ServerStreamingHandler,
  type ServiceRegistration,
  streamingHandlerOf,
  type UnaryHandler,
  unaryHandlerOf,
} from "./handlers.js";
import { settlesWithin } from "./settles-within.js";

/** Dependencies and limits of the Connect server. */
export interface ConnectServerOptions {
  readonly services: readonly ServiceRegistration[];
  readonly logger: Logger;
  /** Largest request message accepted (after decompression). Default 1 MiB, as on grpc-js. */
  readonly maxReceiveMessageBytes?: number;
  readonly onCallEnd?: CallEndListener;
}

/** Connect, gRPC-Web and gRPC (h2c or HTTP/1.1) for clients that cannot use the grpc-js port. */
export interface ConnectServer {
  /** Starts listening; resolves to the bound port (useful with port 0). */
  listen(host: string, port: number): Promise<number>;
  /**
   * Stop accepting, let in-flight calls finish for up to `graceMs`, then abort their signals
   * and drop every connection. Idempotent.
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
}

/**
 * Serves the same handlers as grpc-server.ts through connect-node, on its own plaintext port
 * speaking HTTP/1.1 and h2c (see cleartext-http-server.ts). It costs several times more CPU
 * per call than grpc-js, so it is for browsers and Connect clients.
 *
 * Known limit of connect-node: undecodable request bytes are answered INTERNAL
 * ("parse binary: ...") before any of our code runs; the grpc-js port answers INVALID_ARGUMENT.
 * No health or reflection service here: no package provides them for connect-node.
 */
export function createConnectServer(options: ConnectServerOptions): ConnectServer {
  const { logger, onCallEnd } = options;
  const shutdownController = new AbortController();
  let active = 0;
  let onIdle: (() => void) | undefined;
  let closing = false;
  let shutdownDone: Promise<void> | undefined;

  const maxBytes = options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES;
  const adapter = connectNodeAdapter({
    routes: mountServices,
    readMaxBytes: maxBytes,
    // Aborting this aborts every handler's `ctx.signal` (HandlerContext.signal includes it).
    shutdownSignal: shutdownController.signal,
    // Unknown fields are dropped, as on the grpc-js port.
    binaryOptions: { readUnknownFields: false },
  });
  // Counted per HTTP exchange, not per handler: a drained server must also have written its
  // responses, which connect-node does after the handler returns.
  const server = createCleartextHttpServer((req, res) => {
    active++;
    res.once("close", onExchangeClosed);
    adapter(req, res);
  });

  function onExchangeClosed(): void {
    active--;
    if (active === 0) {
      onIdle?.();
    }
  }

  function mountServices(router: ConnectRouter): void {
    for (const registration of options.services) {
      const service = registration.service;
      for (const method of service.methods) {
        const route: Route = {
          service: service.typeName,
          method: method.name,
          path: `${service.typeName}/${method.name}`,
        };
        if (method.methodKind === "unary") {
          router.rpc(method as DescMethodUnary, unaryImpl(route, unaryHandlerOf(registration, method)));
        } else {
          router.rpc(
            method as DescMethodServerStreaming,
            streamImpl(route, streamingHandlerOf(registration, method)),
          );
        }
      }
    }
  }

  function unaryImpl(
    route: Route,
    handler: UnaryHandler<DescMessage, DescMessage>,
  ): (request: MessageShape<DescMessage>, hctx: HandlerContext) => Promise<MessageInitShape<DescMessage>> {
    return async (request, hctx) => {
      const started = performance.now();
      const ctx = callContextOf(hctx);
      let code: number = status.OK;
      try {
        admit();
        return await handler(request, ctx);
      } catch (err) {
        const failure = fail(route, ctx, hctx, err);
        code = failure.code;
        throw toConnectError(failure);
      } finally {
        finish(route, code, started);
      }
    };
  }

  function streamImpl(
    route: Route,
    handler: ServerStreamingHandler<DescMessage, DescMessage>,
  ): (
    request: MessageShape<DescMessage>,
    hctx: HandlerContext,
  ) => AsyncIterable<MessageInitShape<DescMessage>> {
    return async function* (request, hctx) {
      const started = performance.now();
      const ctx = callContextOf(hctx);
      let code: number = status.OK;
      let completed = false;
      try {
        admit();
        yield* handler(request, ctx);
        completed = true;
      } catch (err) {
        const failure = fail(route, ctx, hctx, err);
        code = failure.code;
        throw toConnectError(failure);
      } finally {
        // Neither completed nor failed: Connect stopped the stream (client gone, deadline).
        finish(route, completed || code !== status.OK ? code : abortedCode(hctx), started);
      }
    };
  }

  function admit(): void {
    // Catches calls on HTTP/1.1 keep-alive connections, which have no GOAWAY to refuse them.
    if (closing) {
      throw new BrokerError("unavailable", "server is shutting down");
    }
  }

  /** Logs the failure; returns the status to send (or, if the client gave up, to record). */
  function fail(route: Route, ctx: CallContext, hctx: HandlerContext, err: unknown): CallStatus {
    const reason: unknown = hctx.signal.reason;
    if (hctx.signal.aborted && (err === reason || (err instanceof Error && err.name === "AbortError"))) {
      // Connect's own reasons (deadline, shutdown) say why; anything else is a disconnect.
      logger.debug({ requestId: ctx.requestId, method: route.path }, "call aborted");
      return {
        code: abortedCode(hctx),
        message: reason instanceof ConnectError ? reason.rawMessage : "call cancelled",
      };
    }
    return reportCallFailure(logger, err, { requestId: ctx.requestId, method: route.path });
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

  function shutdown(graceMs: number): Promise<void> {
    shutdownDone ??= drainAndClose(graceMs);
    return shutdownDone;
  }

  async function drainAndClose(graceMs: number): Promise<void> {
    closing = true;
    server.stopAccepting();
    const drained = new Promise<void>((resolve) => {
      onIdle = resolve;
      if (active === 0) {
        resolve();
      }
    });
    if (!(await settlesWithin(drained, graceMs))) {
      shutdownController.abort(new ConnectError("server is shutting down", Code.Unavailable));
      // Handlers that honour their signal can still answer UNAVAILABLE before the cut.
      await settlesWithin(drained, ABORT_FLUSH_MS);
    }
    await server.destroyAll();
  }

  return { listen: server.listen, shutdown };
}

/** Why Connect aborted the call: its own reasons (deadline, shutdown) carry a code. */
function abortedCode(hctx: HandlerContext): number {
  const reason: unknown = hctx.signal.reason;
  return reason instanceof ConnectError ? reason.code : status.CANCELLED;
}

/** CallContext from Connect's HandlerContext; credentials are read, never logged. */
function callContextOf(hctx: HandlerContext): CallContext {
  const timeoutMs = hctx.timeoutMs();
  const header = hctx.requestHeader;
  const requestId = randomUUID();
  // Set first: for streams, headers must be set before the first message goes out.
  hctx.responseHeader.set(REQUEST_ID_HEADER, requestId);
  return {
    requestId,
    // Headers.get joins repeated headers with ", ", which both readers reject.
    callerKey: callerKeyFrom(header.get(CALLER_KEY_HEADER) ?? undefined),
    bearerToken: bearerTokenFrom(header.get("authorization") ?? undefined),
    signal: hctx.signal,
    deadline: timeoutMs === undefined ? undefined : Date.now() + timeoutMs,
    // This port is plaintext only (see cleartext-http-server.ts): no certificate, so caller keys
    // bound to one are refused here and must use the grpc-js port.
    clientCertSha256: undefined,
  };
}

/**
 * Connect's Code uses the gRPC status numbers, so the shared mapping carries over as is.
 * No metadata: x-request-id is already a response header, and gRPC-Web clients would see
 * it twice if the error repeated it in the trailers.
 */
function toConnectError(failure: CallStatus): ConnectError {
  return new ConnectError(failure.message, failure.code as number as Code);
}
