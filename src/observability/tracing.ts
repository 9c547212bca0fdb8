import {
  type Context,
  context,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  type Tracer,
  trace,
} from "@opentelemetry/api";
import { isBrokerError } from "../errors.js";

/**
 * The attributes a broker span may carry. A closed list of keys, each filled from a closed set
 * of values (route names, provider ids from the registry, keyring verbs, statement names, broker
 * error codes, HTTP status numbers), exactly like the metric labels (SPEC I7): never a secret, a
 * token, a caller key, a user id or user ref, a secret id, a URL path or a header value.
 */
export type SpanAttributes = {
  readonly "rpc.system"?: "grpc";
  readonly "rpc.service"?: string;
  readonly "rpc.method"?: string;
  readonly "db.system.name"?: "postgresql";
  /** A prepared statement's name or a query kind (SELECT, INSERT...): fixed in code. */
  readonly "db.query.summary"?: string;
  readonly "keybroker.keyring.operation"?: "generate_data_key" | "decrypt" | "re_encrypt";
  readonly "keybroker.audit.action"?: string;
  /** A provider id from the registry file. */
  readonly "keybroker.provider"?: string;
  /** GET, POST, ... or `_OTHER` (the semantic-conventions spelling for anything else). */
  readonly "http.request.method"?: string;
  readonly "http.response.status_code"?: number;
  /** The BrokerError code a failed span ended with (`internal` for anything else). */
  readonly "error.type"?: string;
};

/** The span being run, for setting what is only known at its end (a response status). */
export interface ActiveSpan {
  set<K extends keyof SpanAttributes>(key: K, value: NonNullable<SpanAttributes[K]>): void;
}

/** A server span continuing the caller's trace; ended by the transport wrapper. */
export interface ServerSpan {
  /** Runs `work` with this span active, so spans started inside become its children. */
  run<T>(work: () => T): T;
  /** Ends the span; a failure sets ERROR and `error.type`, never the error's message. */
  end(failure?: unknown): void;
}

/**
 * Tracing when it is on. When it is off there is no Tracing at all: the composition root then
 * installs none of the wrappers, so the hot path runs exactly the code it runs without tracing.
 */
export interface Tracing {
  /** A SERVER span named `service/method`, child of the caller's `traceparent` if it parses. */
  startServerSpan(service: string, method: string, traceparent: string | undefined): ServerSpan;
  /** An INTERNAL (or CLIENT) span around `work`, child of the active span. */
  span<T>(
    name: string,
    attributes: SpanAttributes,
    work: (span: ActiveSpan) => Promise<T>,
    kind?: "internal" | "client",
  ): Promise<T>;
  /** A span with no children whose start and end are reported separately (a query's hooks). */
  startLeafSpan(name: string, attributes: SpanAttributes): { end(failure?: unknown): void };
}

// W3C Trace Context, version 00 only: exactly 55 lowercase characters. Anything else (another
// version, upper case, extra fields, an all-zero id) is ignored and the call starts a new trace.
// Nothing of the header but the two ids and the sampled bit is kept: tracestate is not read.
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE_ID = "0".repeat(32);
const ZERO_SPAN_ID = "0".repeat(16);

/** The parent context a `traceparent` value names, or the root context if it does not parse. */
export function parentContextOf(traceparent: string | undefined): Context {
  if (traceparent === undefined || traceparent.length !== 55) return ROOT_CONTEXT;
  const match = TRACEPARENT.exec(traceparent);
  if (match === null) return ROOT_CONTEXT;
  const [, traceId = "", spanId = "", flags = "00"] = match;
  if (traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return ROOT_CONTEXT;
  return trace.setSpanContext(ROOT_CONTEXT, {
    traceId,
    spanId,
    // Only the sampled bit: other flag bits are undefined in version 00.
    traceFlags: Number.parseInt(flags, 16) & TraceFlags.SAMPLED,
    isRemote: true,
  });
}

const HTTP_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

/** The `http.request.method` value of a method: known ones as is, anything else `_OTHER`. */
export function httpMethodAttribute(method: string): string {
  return HTTP_METHODS.has(method) ? method : "_OTHER";
}

function markFailed(span: Span, failure: unknown): void {
  // The message and stack stay out: an error's text may quote what the caller sent.
  span.setAttribute("error.type", isBrokerError(failure) ? failure.code : "internal");
  span.setStatus({ code: SpanStatusCode.ERROR });
}

/** Tracing over an SDK tracer (tracing-sdk.ts builds it, or a test over an in-memory exporter). */
export function createTracing(tracer: Tracer): Tracing {
  return {
    startServerSpan(service, method, traceparent) {
      const span = tracer.startSpan(
        `${service}/${method}`,
        {
          kind: SpanKind.SERVER,
          attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method },
        },
        parentContextOf(traceparent),
      );
      const active = trace.setSpan(ROOT_CONTEXT, span);
      return {
        run: (work) => context.with(active, work),
        end(failure) {
          if (failure !== undefined) markFailed(span, failure);
          span.end();
        },
      };
    },

    span<T>(
      name: string,
      attributes: SpanAttributes,
      work: (span: ActiveSpan) => Promise<T>,
      kind: "internal" | "client" = "internal",
    ): Promise<T> {
      const options = { kind: kind === "client" ? SpanKind.CLIENT : SpanKind.INTERNAL, attributes };
      return tracer.startActiveSpan(name, options, async (span): Promise<T> => {
        try {
          return await work({ set: (key, value) => span.setAttribute(key, value) });
        } catch (err) {
          markFailed(span, err);
          throw err;
        } finally {
          span.end();
        }
      });
    },

    startLeafSpan(name, attributes) {
      const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes });
      return {
        end(failure) {
          if (failure !== undefined) markFailed(span, failure);
          span.end();
        },
      };
    },
  };
}
