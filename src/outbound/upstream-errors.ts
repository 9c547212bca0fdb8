import { BrokerError, isBrokerError } from "../errors.js";

/** Why an in-flight call stopped, as observed by the client (not guessed from the error). */
export interface FailureContext {
  readonly method: string;
  /** The provider's timeout fired. */
  readonly timedOut: boolean;
  /** The caller's AbortSignal fired; its reason, if any. */
  readonly cancelled: boolean;
  readonly cancelReason: unknown;
}

// POST and PATCH are not idempotent: after a failure mid-request the upstream may or may not
// have acted, and the broker never retries them (C35). Say so instead of implying failure.
const NOT_IDEMPOTENT = new Set(["POST", "PATCH"]);
const UNKNOWN_OUTCOME = "; upstream outcome unknown; the request was not retried";

// The request never left the broker: the outcome is known (nothing happened).
const NOT_SENT = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "UND_ERR_CONNECT_TIMEOUT",
]);

/**
 * Turns whatever stopped an upstream call into a BrokerError with a caller-safe message. The
 * original error stays in `cause` for the logs; undici and Node errors name hosts and codes,
 * never our headers or query (which is why the URL is never put into an error here).
 */
export function toUpstreamError(err: unknown, ctx: FailureContext): BrokerError {
  const unknownOutcome = NOT_IDEMPOTENT.has(ctx.method) ? UNKNOWN_OUTCOME : "";
  if (ctx.timedOut || code(err) === "UND_ERR_HEADERS_TIMEOUT" || code(err) === "UND_ERR_BODY_TIMEOUT") {
    return new BrokerError("deadline_exceeded", `upstream did not answer in time${unknownOutcome}`, {
      cause: err,
    });
  }
  if (ctx.cancelled) {
    if (isBrokerError(ctx.cancelReason)) return ctx.cancelReason;
    return new BrokerError("deadline_exceeded", `call was cancelled${unknownOutcome}`, { cause: err });
  }
  if (isBrokerError(err)) return err;

  const c = code(err);
  if (c !== undefined && NOT_SENT.has(c)) {
    return new BrokerError("unavailable", "upstream is unreachable", { cause: err });
  }
  if (
    c !== undefined &&
    (c.startsWith("ERR_TLS") || c.includes("CERT") || c === "UNABLE_TO_VERIFY_LEAF_SIGNATURE")
  ) {
    return new BrokerError("unavailable", "upstream TLS certificate could not be verified", { cause: err });
  }
  if (c?.startsWith("Z_")) {
    return new BrokerError("unavailable", "upstream sent a body that could not be decoded", { cause: err });
  }
  if (c === "UND_ERR_INVALID_ARG" || c === "UND_ERR_NOT_SUPPORTED") {
    return new BrokerError("internal", "internal error", { cause: err });
  }
  return new BrokerError("unavailable", `upstream connection failed${unknownOutcome}`, { cause: err });
}

function code(err: unknown): string | undefined {
  if (typeof err !== "object" || err === null || !("code" in err)) return undefined;
  return typeof err.code === "string" ? err.code : undefined;
}

/** Name and code of a cause, for logs: messages are left out because we do not control them. */
export function describeCause(err: unknown): { name?: string; code?: string } {
  const cause = err instanceof Error && err.cause !== undefined ? err.cause : err;
  const out: { name?: string; code?: string } = {};
  if (cause instanceof Error) out.name = cause.name;
  const c = code(cause);
  if (c !== undefined) out.code = c;
  return out;
}
