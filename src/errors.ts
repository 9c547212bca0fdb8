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

/**
 * Why a credential was refused, for the caller's code to act on (sent as a google.rpc.ErrorInfo
 * detail). Caller-key reasons are deliberately coarse: unknown, revoked, expired, malformed and
 * certificate-bound keys are all "caller_key_invalid", so a caller cannot probe which keys exist
 * or are bound to a certificate (catalogue B20, B22). Token reasons say no more than the message.
 */
export type RefusalReason =
  | "caller_key_missing"
  | "caller_key_invalid"
  | "caller_key_scope_missing"
  | "token_missing"
  | "token_malformed"
  | "token_invalid"
  | "token_expired"
  | "token_not_for_user"
  | "token_wrong_client"
  | "token_permission_missing"
  | "operation_unclassified"
  | "operation_not_granted"
  | "session_ended"
  | "dpop_proof_missing"
  | "dpop_proof_invalid"
  | "dpop_proof_replayed"
  | "session_locked"
  | "pin_wrong"
  | "pin_locked"
  | "connection_needs_reconsent";

/**
 * Which credential a refusal is about. "secret": the stored secret cannot be used for the call
 * (its provider does not classify the endpoint, or its grant does not include the class, I10).
 */
export type RefusedCredential = "caller_key" | "access_token" | "secret";

const CREDENTIAL_OF: Readonly<Record<RefusalReason, RefusedCredential>> = {
  caller_key_missing: "caller_key",
  caller_key_invalid: "caller_key",
  caller_key_scope_missing: "caller_key",
  token_missing: "access_token",
  token_malformed: "access_token",
  token_invalid: "access_token",
  token_expired: "access_token",
  token_not_for_user: "access_token",
  token_wrong_client: "access_token",
  token_permission_missing: "access_token",
  operation_unclassified: "secret",
  operation_not_granted: "secret",
  session_ended: "access_token",
  // A DPoP proof is part of presenting the access token (RFC 9449): the same credential refused.
  dpop_proof_missing: "access_token",
  dpop_proof_invalid: "access_token",
  dpop_proof_replayed: "access_token",
  // Issue 14 item 4: a PIN user's session has not unlocked, or the PIN is locked out.
  session_locked: "access_token",
  pin_wrong: "access_token",
  pin_locked: "access_token",
  // Issue 15: the provider refused the OAuth connection's grant; the user must connect again.
  connection_needs_reconsent: "secret",
};

/** The credential `reason` refers to. */
export function refusedCredentialOf(reason: RefusalReason): RefusedCredential {
  return CREDENTIAL_OF[reason];
}

/** Whether `value` is a reason this version knows (for reading one back off the wire). */
export function isRefusalReason(value: string): value is RefusalReason {
  return Object.hasOwn(CREDENTIAL_OF, value);
}

export interface BrokerErrorOptions {
  readonly cause?: unknown;
  /** Set where a credential is refused; crosses the edge as a machine-readable detail. */
  readonly reason?: RefusalReason;
  /** Set where a limit refuses a call: when to try again, sent as a google.rpc.RetryInfo detail. */
  readonly retryAfterMs?: number;
}

export class BrokerError extends Error {
  override readonly name = "BrokerError";
  readonly code: BrokerErrorCode;
  readonly reason: RefusalReason | undefined;
  readonly retryAfterMs: number | undefined;

  constructor(code: BrokerErrorCode, message: string, options?: BrokerErrorOptions) {
    // Only a given `cause` is passed on: Error treats `{ cause: undefined }` as a cause.
    super(message, options !== undefined && "cause" in options ? { cause: options.cause } : undefined);
    this.code = code;
    this.reason = options?.reason;
    this.retryAfterMs = options?.retryAfterMs;
  }
}

export function isBrokerError(err: unknown): err is BrokerError {
  return err instanceof BrokerError;
}

/** The request itself is wrong: the caller must change it before retrying. */
export function invalidArgument(message: string, options?: BrokerErrorOptions): BrokerError {
  return new BrokerError("invalid_argument", message, options);
}

/** The request is well formed, but the stored state it needs is not there or not usable. */
export function failedPrecondition(message: string, options?: BrokerErrorOptions): BrokerError {
  return new BrokerError("failed_precondition", message, options);
}

/**
 * `work`, or `toError(signal)` as soon as `signal` aborts (or at once if it already has). The work
 * itself is not interrupted, its late result is dropped: for waits that cannot be cancelled.
 */
export function untilAborted<T>(
  work: Promise<T>,
  signal: AbortSignal,
  toError: (signal: AbortSignal) => Error,
): Promise<T> {
  if (signal.aborted) return Promise.reject(toError(signal));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(toError(signal));
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}
