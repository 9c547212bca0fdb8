/**
 * The one error type domain code throws. `message` is shown to the caller, so it must
 * be safe: no secret, token, raw user id or internal detail. `cause` keeps the real
 * reason for the logs (which are redacted) and never crosses the transport edge.
 */
export type BrokerErrorCode =
  | "invalid_argument"
  | "unauthenticated"
  | "permission_denied"
  | "not_found"
  | "already_exists"
  | "failed_precondition"
  | "resource_exhausted"
  | "unavailable"
  | "deadline_exceeded"
  | "data_loss"
  | "internal";

export class BrokerError extends Error {
  override readonly name = "BrokerError";
  readonly code: BrokerErrorCode;

  constructor(code: BrokerErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

export function isBrokerError(err: unknown): err is BrokerError {
  return err instanceof BrokerError;
}
