import { status } from "@grpc/grpc-js";
import { type BrokerErrorCode, isBrokerError, type RefusalReason } from "../../errors.js";
import type { Logger } from "../../log/logger.js";

/**
 * What the caller is told when a call fails. `code` is a gRPC status number; Connect's `Code`
 * uses the same numbers, so both transports share this one mapping.
 */
export interface CallStatus {
  readonly code: status;
  /** Safe to send: a BrokerError's own message, or the fixed text "internal error". */
  readonly message: string;
  /** Set when the failure was a BrokerError. */
  readonly brokerCode?: BrokerErrorCode;
  /** Why a credential was refused; sent as a google.rpc.ErrorInfo detail (see error-info.ts). */
  readonly reason?: RefusalReason;
  /** When a rate limit lets the call through again; sent as a google.rpc.RetryInfo detail. */
  readonly retryAfterMs?: number;
}

/** Which call failed, for the log line: never the request message or metadata values. */
export interface FailedCall {
  readonly requestId: string;
  /** Full method path, e.g. `keybroker.v1.SecretService/PutSecret`. */
  readonly method: string;
}

const INTERNAL_ERROR: CallStatus = Object.freeze({ code: status.INTERNAL, message: "internal error" });

/** The one place a domain error code becomes a gRPC status. */
export function grpcStatusOf(code: BrokerErrorCode): status {
  switch (code) {
    case "invalid_argument":
      return status.INVALID_ARGUMENT;
    case "unauthenticated":
      return status.UNAUTHENTICATED;
    case "permission_denied":
      return status.PERMISSION_DENIED;
    case "not_found":
      return status.NOT_FOUND;
    case "already_exists":
      return status.ALREADY_EXISTS;
    case "failed_precondition":
      return status.FAILED_PRECONDITION;
    case "resource_exhausted":
      return status.RESOURCE_EXHAUSTED;
    case "unavailable":
      return status.UNAVAILABLE;
    case "deadline_exceeded":
      return status.DEADLINE_EXCEEDED;
    case "data_loss":
      return status.DATA_LOSS;
    case "internal":
      return status.INTERNAL;
    default: {
      const unhandled: never = code;
      throw new Error(`unmapped broker error code: ${String(unhandled)}`);
    }
  }
}

/**
 * Maps anything a handler threw to what the caller may see. Only a BrokerError crosses the edge
 * (domain code writes its message to be caller-safe; the store turns driver errors into one
 * where they are born); anything else becomes INTERNAL "internal error", because its message or
 * stack may hold a secret or internals.
 */
export function toStatus(err: unknown): CallStatus {
  if (!isBrokerError(err)) {
    return INTERNAL_ERROR;
  }
  return {
    code: grpcStatusOf(err.code),
    message: err.message,
    brokerCode: err.code,
    ...(err.reason === undefined ? {} : { reason: err.reason }),
    ...(err.retryAfterMs === undefined ? {} : { retryAfterMs: err.retryAfterMs }),
  };
}

/**
 * Logs a failed call at a level that matches who must act. Server-side failures keep their
 * `cause` (the logger redacts known secret paths); caller mistakes are logged without it,
 * so a flood of bad requests cannot fill the logs with internals. Request messages and
 * metadata values are never passed in.
 */
export function logCallFailure(logger: Logger, err: unknown, result: CallStatus, call: FailedCall): void {
  const fields = {
    requestId: call.requestId,
    method: call.method,
    grpcCode: result.code,
    brokerCode: result.brokerCode,
  };
  switch (result.brokerCode) {
    case undefined:
      logger.error({ ...fields, err }, "call failed with an unexpected error");
      return;
    case "internal":
    case "data_loss":
      logger.error({ ...fields, err }, "call failed");
      return;
    case "unavailable":
    case "deadline_exceeded":
      logger.warn({ ...fields, err }, "call failed");
      return;
    default:
      logger.info({ ...fields, reason: result.message }, "call rejected");
  }
}

/** `toStatus` plus `logCallFailure`: what both transports do with a handler's error. */
export function reportCallFailure(logger: Logger, err: unknown, call: FailedCall): CallStatus {
  const result = toStatus(err);
  logCallFailure(logger, err, result, call);
  return result;
}
