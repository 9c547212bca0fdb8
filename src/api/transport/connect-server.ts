import { randomUUID } from "node:crypto";
import type { TlsOptions } from "node:tls";
import type {
  DescMessage,
  DescMethodServerStreaming,
  DescMethodUnary,
  MessageInitShape,
  MessageShape,
} from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  type ConnectRouter,
  createContextKey,
  createContextValues,
  type HandlerContext,
} from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import { certificateSha256 } from "../../auth/client-certificate.js";
import { ErrorInfoSchema, RetryInfoSchema } from "../../gen/google/rpc/error_details_pb.js";
import type { Logger } from "../../log/logger.js";
import type { CallEndListener } from "../../observability/call-end.js";
import { errorInfoOf, retryInfoOf } from "../error-info.js";
import {
  AUTHORIZATION_HEADER,
  CALLER_KEY_HEADER,
  DPOP_HEADER,
  REQUEST_ID_HEADER,
  TRACEPARENT_HEADER,
} from "../wire-headers.js";
import type { CallContext } from "./call-context.js";
import {
  type CallAbort,
  type CallRoute,
  createCallLifecycle,
  DEFAULT_MAX_RECEIVE_MESSAGE_BYTES,
  routeOf,
} from "./call-lifecycle.js";
import { createCleartextHttpServer } from "./cleartext-http-server.js";
import { type ConnectionLimits, DEFAULT_CONNECTION_LIMITS } from "./connection-limits.js";
import { bearerTokenFrom, callerKeyFrom, dpopProofFrom } from "./credential-headers.js";
import type { CallStatus } from "./error-status.js";
import { type FormPostRoute, formRouteFor, serveFormPost } from "./form-post-route.js";
import {
  type ServerStreamingHandler,
  type ServiceRegistration,
  streamingHandlerOf,
  type UnaryHandler,
  unaryHandlerOf,
} from "./handlers.js";

/** Dependencies and limits of the Connect server. */
export interface ConnectServerOptions {
  readonly services: readonly ServiceRegistration[];
  readonly logger: Logger;
  /** Largest request message accepted (after decompression). Default 1 MiB, as on grpc-js. */
  readonly maxReceiveMessageBytes?: number;
  readonly onCallEnd?: CallEndListener;
  /** Connections, streams per connection, idle and handshake timeouts (L5). */
  readonly limits?: ConnectionLimits;
  /** Default: plaintext. TLS (mTLS with a client CA) from tls-credentials.ts `nodeTlsOptions` (M3). */
  readonly tls?: TlsOptions;
  /** Plain HTTP POST routes served beside the RPCs (the back-channel logout endpoint). */
  readonly formRoutes?: readonly FormPostRoute[];
}

// The verified client certificate's SHA-256, read from the connection once per request.
const CLIENT_CERT_SHA256 = createContextKey<Buffer | undefined>(undefined, {
  description: "client certificate SHA-256",
});

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

/**
 * Serves the same handlers as grpc-server.ts through connect-node, on its own port speaking
 * HTTP/1.1 and HTTP/2, in plaintext or TLS (see cleartext-http-server.ts). It costs several times more CPU
 * per call than grpc-js, so it is for browsers and Connect clients.
 *
 * Known limit of connect-node: undecodable request bytes are answered INTERNAL
 * ("parse binary: ...") before any of our code runs; the grpc-js port answers INVALID_ARGUMENT.
 * No health or reflection service here: no package provides them for connect-node.
 */
export function createConnectServer(options: ConnectServerOptions): ConnectServer {
  const lifecycle = createCallLifecycle(options);
  const shutdownController = new AbortController();
  // connect-node has one shutdown signal for all handlers, so aborting any exchange aborts them
  // all; the lifecycle only calls this once the grace period is over, for every exchange left.
  const abortAll = (reason: unknown): void => shutdownController.abort(reason);

  const maxBytes = options.maxReceiveMessageBytes ?? DEFAULT_MAX_RECEIVE_MESSAGE_BYTES;
  const adapter = connectNodeAdapter({
    routes: mountServices,
    readMaxBytes: maxBytes,
    // Aborting this aborts every handler's `ctx.signal` (HandlerContext.signal includes it).
    shutdownSignal: shutdownController.signal,
    // Unknown fields are dropped, as on the grpc-js port.
    binaryOptions: { readUnknownFields: false },
    contextValues(req) {
      const der = server.verifiedClientCertificate(req);
      return createContextValues().set(
        CLIENT_CERT_SHA256,
        der === undefined ? undefined : certificateSha256(der),
      );
    },
  });
  // Tracked per HTTP exchange, not per handler: a drained server must also have written its
  // responses, which connect-node does after the handler returns.
  const formRoutes = options.formRoutes ?? [];
  const server = createCleartextHttpServer(
    (req, res) => {
      res.once("close", lifecycle.track({ abort: abortAll }));
      const formRoute = formRouteFor(formRoutes, req);
      if (formRoute !== undefined) serveFormPost(formRoute, req, res, options.logger);
      else adapter(req, res);
    },
    {
      limits: options.limits ?? DEFAULT_CONNECTION_LIMITS,
      ...(options.tls === undefined ? {} : { tls: options.tls }),
    },
  );

  function mountServices(router: ConnectRouter): void {
    for (const registration of options.services) {
      for (const method of registration.service.methods) {
        const route = routeOf(method);
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
    route: CallRoute,
    handler: UnaryHandler<DescMessage, DescMessage>,
  ): (request: MessageShape<DescMessage>, hctx: HandlerContext) => Promise<MessageInitShape<DescMessage>> {
    return async (request, hctx) => {
      const ctx = callContextOf(hctx);
      const served = lifecycle.start(route, ctx.requestId);
      let code: number = status.OK;
      try {
        lifecycle.admit();
        return await handler(request, ctx);
      } catch (err) {
        const failure = lifecycle.fail(served, err, abortOf(hctx));
        code = failure.code;
        throw toConnectError(failure);
      } finally {
        lifecycle.end(served, code);
      }
    };
  }

  function streamImpl(
    route: CallRoute,
    handler: ServerStreamingHandler<DescMessage, DescMessage>,
  ): (
    request: MessageShape<DescMessage>,
    hctx: HandlerContext,
  ) => AsyncIterable<MessageInitShape<DescMessage>> {
    return async function* (request, hctx) {
      const ctx = callContextOf(hctx);
      const served = lifecycle.start(route, ctx.requestId);
      let code: number = status.OK;
      let completed = false;
      try {
        lifecycle.admit();
        yield* handler(request, ctx);
        completed = true;
      } catch (err) {
        const failure = lifecycle.fail(served, err, abortOf(hctx));
        code = failure.code;
        throw toConnectError(failure);
      } finally {
        // Neither completed nor failed: Connect stopped the stream (client gone, deadline).
        lifecycle.end(served, completed || code !== status.OK ? code : abortedCode(hctx));
      }
    };
  }

  function shutdown(graceMs: number): Promise<void> {
    return lifecycle.shutdown(graceMs, {
      stopAccepting: () => server.stopAccepting(),
      drain: () => lifecycle.idle(),
      abortReason: new ConnectError("server is shutting down", Code.Unavailable),
      close: () => server.destroyAll(),
    });
  }

  return { listen: server.listen, shutdown };
}

/**
 * How an aborted call is recorded and answered. Connect's own reasons (deadline, shutdown) say
 * why; anything else is a disconnect. A real failure after the abort is still answered.
 */
function abortOf(hctx: HandlerContext): CallAbort | undefined {
  if (!hctx.signal.aborted) {
    return undefined;
  }
  const reason: unknown = hctx.signal.reason;
  return {
    status: {
      code: abortedCode(hctx),
      message: reason instanceof ConnectError ? reason.rawMessage : "call cancelled",
    },
    signalReason: reason,
    final: false,
  };
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
    bearerToken: bearerTokenFrom(header.get(AUTHORIZATION_HEADER) ?? undefined),
    dpopProof: dpopProofFrom(header.get(DPOP_HEADER) ?? undefined),
    rpcPath: `/${hctx.service.typeName}/${hctx.method.name}`,
    // A getter: only read when tracing is on. Repeated headers are joined by ", " and then
    // fail the strict parse, like the credentials above.
    get traceparent() {
      return header.get(TRACEPARENT_HEADER) ?? undefined;
    },
    signal: hctx.signal,
    deadline: timeoutMs === undefined ? undefined : Date.now() + timeoutMs,
    // Only under mTLS: a certificate the handshake verified (caller keys bound to one need it).
    clientCertSha256: hctx.values.get(CLIENT_CERT_SHA256),
  };
}

/**
 * Connect's Code uses the gRPC status numbers, so the shared mapping carries over as is.
 * No metadata: x-request-id is already a response header, and gRPC-Web clients would see
 * it twice if the error repeated it in the trailers. A refusal's reason goes as an ErrorInfo
 * detail, which connect-node writes the way each protocol expects (for gRPC, in
 * grpc-status-details-bin, exactly as the grpc-js port does). So does a rate limit's RetryInfo.
 */
function toConnectError(failure: CallStatus): ConnectError {
  const details: Array<
    | { desc: typeof ErrorInfoSchema; value: ReturnType<typeof errorInfoOf> }
    | { desc: typeof RetryInfoSchema; value: ReturnType<typeof retryInfoOf> }
  > = [];
  if (failure.reason !== undefined)
    details.push({ desc: ErrorInfoSchema, value: errorInfoOf(failure.reason) });
  if (failure.retryAfterMs !== undefined) {
    details.push({ desc: RetryInfoSchema, value: retryInfoOf(failure.retryAfterMs) });
  }
  return new ConnectError(failure.message, failure.code as number as Code, undefined, details);
}
