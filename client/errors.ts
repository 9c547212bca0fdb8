import { status } from "@grpc/grpc-js";
import type { Refusal } from "../src/api/error-info.js";
import type { RefusalReason } from "../src/errors.js";

export type { RefusalReason } from "../src/errors.js";

/** A gRPC status name, e.g. "NOT_FOUND": stable across grpc-js versions, unlike message text. */
export type KeybrokerErrorCode = Exclude<keyof typeof status, "OK">;

/** Which credential the broker refused; the main app reacts to each very differently. */
export type RefusedCredential = "user_token" | "caller_key";

/**
 * Every failure of a Keybroker client call. `message` is the broker's caller-safe text (or the
 * transport's), never a token or caller key: the client scrubs both before building it.
 * `requestId` is the broker's `x-request-id`, to quote when asking ops to find the log line;
 * it is undefined when the call never reached the broker (e.g. it was down or the deadline hit first).
 */
export class KeybrokerError extends Error {
  override readonly name: string = "KeybrokerError";
  readonly code: KeybrokerErrorCode;
  readonly requestId: string | undefined;

  constructor(code: KeybrokerErrorCode, message: string, requestId: string | undefined) {
    super(message);
    this.code = code;
    this.requestId = requestId;
  }
}

/** The request itself is wrong (bad field, path outside the provider, unknown provider): do not retry. */
export class InvalidArgumentError extends KeybrokerError {
  override readonly name = "InvalidArgumentError";
}

/**
 * A credential was refused. `credential` says which: "user_token" means the user's session is
 * over (send them to log in again); "caller_key" means this app's own key is bad, revoked or
 * expired — an ops problem that logging the user out would not fix. `reason` says why, e.g.
 * "token_expired" or "caller_key_invalid"; both come from the broker's google.rpc.ErrorInfo
 * detail, never from the message text. Without that detail (a broker too old to send it),
 * `reason` is undefined and `credential` is "user_token".
 */
export class UnauthenticatedError extends KeybrokerError {
  override readonly name = "UnauthenticatedError";
  readonly credential: RefusedCredential;
  readonly reason: RefusalReason | undefined;

  constructor(message: string, requestId: string | undefined, refusal?: Refusal) {
    super("UNAUTHENTICATED", message, requestId);
    this.credential = refusal?.credential === "caller_key" ? "caller_key" : "user_token";
    this.reason = refusal?.reason;
  }
}

/**
 * Authenticated, but not allowed: the caller key lacks a scope, or the token lacks a permission.
 * `reason` (from the broker's ErrorInfo detail) says which, e.g. "caller_key_scope_missing" (for a
 * proxied call: the key lacks that operation class's `proxy:<class>` scope), "operation_not_granted"
 * (the secret's grant does not include the call's class: its owner can widen it with putSecret) or
 * "operation_unclassified" (the provider classifies no such endpoint); undefined when the refusal
 * is not about a credential (e.g. a path the provider does not allow).
 */
export class PermissionDeniedError extends KeybrokerError {
  override readonly name = "PermissionDeniedError";
  readonly reason: RefusalReason | undefined;

  constructor(code: KeybrokerErrorCode, message: string, requestId: string | undefined, refusal?: Refusal) {
    super(code, message, requestId);
    this.reason = refusal?.reason;
  }
}

/** No such secret for this user. Another user's secret looks exactly the same (SPEC I4). */
export class NotFoundError extends KeybrokerError {
  override readonly name = "NotFoundError";
}

/** The user already has a secret with this provider and label. */
export class AlreadyExistsError extends KeybrokerError {
  override readonly name = "AlreadyExistsError";
}

/** The stored secret or provider cannot serve this request as it is (e.g. a field is not valid base64). */
export class FailedPreconditionError extends KeybrokerError {
  override readonly name = "FailedPreconditionError";
}

/**
 * A rate or size limit was hit (e.g. the upstream response is larger than the provider allows).
 * `retryAfterMs` is set when a rate limit refused the call: wait that long before retrying (from
 * the broker's google.rpc.RetryInfo detail). Undefined for limits that waiting does not lift.
 */
export class ResourceExhaustedError extends KeybrokerError {
  override readonly name = "ResourceExhaustedError";
  readonly retryAfterMs: number | undefined;

  constructor(
    code: KeybrokerErrorCode,
    message: string,
    requestId: string | undefined,
    retryAfterMs?: number,
  ) {
    super(code, message, requestId);
    this.retryAfterMs = retryAfterMs;
  }
}

/** The broker or something behind it is unreachable or shutting down: retry later, with backoff. */
export class UnavailableError extends KeybrokerError {
  override readonly name = "UnavailableError";
}

/**
 * The deadline passed before an answer. For a proxied call that changes state (POST, an order)
 * the outcome is UNKNOWN: the upstream may have acted. Do not blindly retry; check first.
 */
export class DeadlineExceededError extends KeybrokerError {
  override readonly name = "DeadlineExceededError";
}

/** The caller gave up: the AbortSignal passed in the call options fired. */
export class CancelledError extends KeybrokerError {
  override readonly name = "CancelledError";
}

/** Stored data failed its integrity check (tampered or corrupted ciphertext): alert ops, do not retry. */
export class DataLossError extends KeybrokerError {
  override readonly name = "DataLossError";
}

/** A bug or unexpected failure in the broker or the client. */
export class InternalError extends KeybrokerError {
  override readonly name = "InternalError";
}

/** What a failed gRPC call ended with. */
export interface FailedStatus {
  readonly code: number;
  readonly details: string;
  /** The refusal the broker sent as a google.rpc.ErrorInfo detail, if any. */
  readonly refusal?: Refusal | undefined;
  /** The delay the broker's google.rpc.RetryInfo detail asks for, in ms, if any. */
  readonly retryAfterMs?: number | undefined;
}

/**
 * Builds the typed error for a failed call. `secrets` are the values this call carried (the
 * caller key and the user's token): any occurrence in the text is replaced, so an error that
 * is logged or shown can never carry one, whatever the server or transport wrote.
 */
export function keybrokerErrorOf(
  failed: FailedStatus,
  requestId: string | undefined,
  secrets: readonly string[],
): KeybrokerError {
  const code = codeOf(failed.code);
  const message = scrub(failed.details, secrets) || code;
  switch (code) {
    case "INVALID_ARGUMENT":
      return new InvalidArgumentError(code, message, requestId);
    case "UNAUTHENTICATED":
      return new UnauthenticatedError(message, requestId, failed.refusal);
    case "PERMISSION_DENIED":
      return new PermissionDeniedError(code, message, requestId, failed.refusal);
    case "NOT_FOUND":
      return new NotFoundError(code, message, requestId);
    case "ALREADY_EXISTS":
      return new AlreadyExistsError(code, message, requestId);
    case "FAILED_PRECONDITION":
      return new FailedPreconditionError(code, message, requestId);
    case "RESOURCE_EXHAUSTED":
      return new ResourceExhaustedError(code, message, requestId, failed.retryAfterMs);
    case "UNAVAILABLE":
      return new UnavailableError(code, message, requestId);
    case "DEADLINE_EXCEEDED":
      return new DeadlineExceededError(code, message, requestId);
    case "CANCELLED":
      return new CancelledError(code, message, requestId);
    case "DATA_LOSS":
      return new DataLossError(code, message, requestId);
    case "INTERNAL":
      return new InternalError(code, message, requestId);
    case "ABORTED":
    case "OUT_OF_RANGE":
    case "UNIMPLEMENTED":
    case "UNKNOWN":
      // The broker never answers these on purpose (UNIMPLEMENTED means client/broker version
      // skew): the base class with the real code is more honest than a guess.
      return new KeybrokerError(code, message, requestId);
    default: {
      const unhandled: never = code;
      throw new Error(`unmapped gRPC status: ${String(unhandled)}`);
    }
  }
}

/** The status name for a code; anything outside the gRPC range is treated as UNKNOWN. */
function codeOf(code: number): KeybrokerErrorCode {
  const name = status[code] as keyof typeof status | undefined;
  return name === undefined || name === "OK" ? "UNKNOWN" : name;
}

function scrub(text: string, secrets: readonly string[]): string {
  let result = text;
  for (const secret of secrets) {
    // An empty value would "match" between every character.
    if (secret !== "") result = result.replaceAll(secret, "[REDACTED]");
  }
  return result;
}
