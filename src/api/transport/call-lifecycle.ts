import { performance } from "node:perf_hooks";
import type { DescMethod } from "@bufbuild/protobuf";
import { BrokerError } from "../../errors.js";
import type { Logger } from "../../log/logger.js";
import type { CallEndListener, GrpcMethodType } from "../../observability/call-end.js";
import { type CallStatus, reportCallFailure } from "./error-status.js";
import { settlesWithin } from "./settles-within.js";

/** Largest request message accepted by either transport unless configured. */
export const DEFAULT_MAX_RECEIVE_MESSAGE_BYTES = 1024 * 1024;
/** Room around a proxied body for the rest of its request: secret id, path, query, headers. */
export const RECEIVE_FRAMING_BYTES = 64 * 1024;

/**
 * The receive cap that lets through the largest body a provider accepts (F3): a fixed 1 MiB cap
 * refused a body of exactly 1 MiB, the default provider limit, once framed in its request.
 */
export function receiveLimitFor(largestRequestBodyBytes: number): number {
  return Math.max(DEFAULT_MAX_RECEIVE_MESSAGE_BYTES, largestRequestBodyBytes + RECEIVE_FRAMING_BYTES);
}
/** After the grace period, how long aborted handlers get to send their status. */
const ABORT_FLUSH_MS = 250;

/** What a call needs about its method, resolved once at start-up rather than per call. */
export interface CallRoute {
  readonly service: string;
  readonly method: string;
  /** `keybroker.v1.SecretService/PutSecret`, for logs. */
  readonly path: string;
  readonly type: GrpcMethodType;
}

/** The route of `method`. */
export function routeOf(method: DescMethod): CallRoute {
  const service = method.parent.typeName;
  const type = method.methodKind === "server_streaming" ? "server_stream" : "unary";
  return { service, method: method.name, path: `${service}/${method.name}`, type };
}

/** A call being served, as the lifecycle sees it. */
export interface LifecycleCall {
  readonly route: CallRoute;
  readonly requestId: string;
  /** `performance.now()` when the call arrived. */
  readonly started: number;
}

/** A call the transport aborted (client gone, deadline, shutdown), as it must be recorded. */
export interface CallAbort {
  /** The status to record, and to send when the client can still receive one. */
  readonly status: CallStatus;
  /** The abort signal's reason: a handler rethrowing it is only giving up, not failing. */
  readonly signalReason: unknown;
  /**
   * True when nothing can reach the client any more (grpc-js: the call is cancelled), so even a
   * real failure is recorded as the abort; false when the transport still answers the failure.
   */
  readonly final: boolean;
}

/** Something in flight that shutdown can abort once the grace period is over. */
export interface InFlight {
  abort(reason: unknown): void;
}

/** The transport's part of a shutdown; the lifecycle decides when each step runs. */
export interface DrainSteps {
  /** Stop taking new connections (and say so, e.g. health NOT_SERVING). */
  stopAccepting(): void;
  /** Called once, after stopAccepting: settles when every call has ended and its answer is written. */
  drain(): Promise<void>;
  /** The abort reason handed to every call still in flight after the grace period. */
  abortReason: unknown;
  /** Runs last; `drainedInTime` is false when calls had to be aborted, so connections must be cut. */
  close(drainedInTime: boolean): void | Promise<void>;
}

/**
 * The call lifecycle both transports share, so grpc-js and Connect cannot drift apart: admission
 * (refuse new calls once shutdown begins), failure classification (abort vs failure, error →
 * status), call-end metrics, in-flight tracking, and drain (wait for in-flight calls up to the
 * grace period, then abort their signals).
 */
export interface CallLifecycle {
  /** Starts timing a call (its end is reported whatever happens next). */
  start(route: CallRoute, requestId: string): LifecycleCall;
  /** Throws UNAVAILABLE once shutdown has begun: called first thing inside the call's `try`. */
  admit(): void;
  /** Tracks `work` until the returned function is called; shutdown aborts what is still tracked. */
  track(work: InFlight): () => void;
  /** Settles when nothing is tracked. */
  idle(): Promise<void>;
  /** Logs the failure; returns the status to send (or, if the call was aborted, to record). */
  fail(call: LifecycleCall, err: unknown, abort: CallAbort | undefined): CallStatus;
  /** Reports the finished call to the call-end listener; never throws. */
  end(call: LifecycleCall, code: number): void;
  /** Stops, drains for up to `graceMs`, aborts what is left, then closes. Idempotent. */
  shutdown(graceMs: number, steps: DrainSteps): Promise<void>;
}

export interface CallLifecycleOptions {
  readonly logger: Logger;
  readonly onCallEnd?: CallEndListener;
}

export function createCallLifecycle(options: CallLifecycleOptions): CallLifecycle {
  const { logger, onCallEnd } = options;
  const inFlight = new Set<InFlight>();
  let onIdle: (() => void) | undefined;
  let closing = false;
  let shutdownDone: Promise<void> | undefined;

  function start(route: CallRoute, requestId: string): LifecycleCall {
    return { route, requestId, started: performance.now() };
  }

  function admit(): void {
    // Also catches calls on connections opened before shutdown (HTTP/1.1 keep-alive has no
    // GOAWAY to refuse them).
    if (closing) {
      throw new BrokerError("unavailable", "server is shutting down");
    }
  }

  function track(work: InFlight): () => void {
    inFlight.add(work);
    return () => {
      inFlight.delete(work);
      if (inFlight.size === 0) {
        onIdle?.();
      }
    };
  }

  function idle(): Promise<void> {
    return new Promise<void>((resolve) => {
      onIdle = resolve;
      if (inFlight.size === 0) {
        resolve();
      }
    });
  }

  function fail(call: LifecycleCall, err: unknown, abort: CallAbort | undefined): CallStatus {
    const logged = { requestId: call.requestId, method: call.route.path };
    if (abort !== undefined && isAbortOf(err, abort.signalReason)) {
      logger.debug(logged, "call aborted");
      return abort.status;
    }
    const result = reportCallFailure(logger, err, logged);
    return abort?.final === true ? abort.status : result;
  }

  function end(call: LifecycleCall, code: number): void {
    if (onCallEnd === undefined) {
      return;
    }
    try {
      onCallEnd({
        service: call.route.service,
        method: call.route.method,
        type: call.route.type,
        code,
        durationMs: performance.now() - call.started,
      });
    } catch (err) {
      logger.error({ err, method: call.route.path }, "onCallEnd listener threw");
    }
  }

  function shutdown(graceMs: number, steps: DrainSteps): Promise<void> {
    shutdownDone ??= drainAndClose(graceMs, steps);
    return shutdownDone;
  }

  async function drainAndClose(graceMs: number, steps: DrainSteps): Promise<void> {
    closing = true;
    steps.stopAccepting();
    const drained = steps.drain();
    if (await settlesWithin(drained, graceMs)) {
      await steps.close(true);
      return;
    }
    for (const work of inFlight) {
      work.abort(steps.abortReason);
    }
    // Handlers that honour their signal can still answer UNAVAILABLE before the cut.
    await settlesWithin(drained, ABORT_FLUSH_MS);
    await steps.close(false);
  }

  return { start, admit, track, idle, fail, end, shutdown };
}

/** Whether `err` is just the handler giving up because its signal aborted. */
function isAbortOf(err: unknown, signalReason: unknown): boolean {
  return err === signalReason || (err instanceof Error && err.name === "AbortError");
}
