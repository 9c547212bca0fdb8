import { BrokerError } from "../errors.js";

/**
 * RFC 6749 §5.2 and RFC 7009 §2.2.1 error codes: the only provider words the broker repeats (in
 * logs and audit rows). Anything else a provider answers is "other"; `error_description` and
 * `error_uri` are never read at all, so provider text cannot reach a log, a caller or a browser.
 */
const REGISTERED_ERRORS = new Set([
  "invalid_request",
  "invalid_client",
  "invalid_grant",
  "unauthorized_client",
  "unsupported_grant_type",
  "invalid_scope",
  "unsupported_token_type",
  "access_denied",
  "server_error",
  "temporarily_unavailable",
]);

/** The provider's `error` as a registered code, or "other". */
export function registeredErrorCode(value: unknown): string {
  return typeof value === "string" && REGISTERED_ERRORS.has(value) ? value : "other";
}

/** What went wrong at a token or revocation endpoint, for the caller to act on. */
export type TokenEndpointFailure = "invalid_grant" | "provider_unavailable" | "provider_error";

/**
 * A token endpoint refused or failed. `oauthError` is the provider's registered error code (or
 * "other"); the message is the broker's own and safe to show.
 */
export abstract class TokenEndpointError extends BrokerError {
  abstract readonly failure: TokenEndpointFailure;
  readonly oauthError: string | undefined;

  constructor(
    code: BrokerError["code"],
    message: string,
    options: { readonly oauthError?: string; readonly cause?: unknown } = {},
  ) {
    super(code, message, options.cause === undefined ? undefined : { cause: options.cause });
    this.oauthError = options.oauthError;
  }
}

/** The grant (code, refresh token) is invalid, expired or revoked: the user must consent again. */
export class InvalidGrant extends TokenEndpointError {
  readonly failure = "invalid_grant" as const;
  constructor(options: { readonly oauthError?: string; readonly cause?: unknown } = {}) {
    super("failed_precondition", "the provider refused the grant; the user must reconnect", options);
  }
}

/** The provider could not be reached, timed out, or answered 5xx/429: try again later. */
export class ProviderUnavailable extends TokenEndpointError {
  readonly failure = "provider_unavailable" as const;
  constructor(options: { readonly oauthError?: string; readonly cause?: unknown } = {}) {
    super("unavailable", "the provider's token endpoint is unavailable; try again later", options);
  }
}

/** The provider refused the request otherwise (a bad client secret, a malformed answer). */
export class ProviderError extends TokenEndpointError {
  readonly failure = "provider_error" as const;
  constructor(options: { readonly oauthError?: string; readonly cause?: unknown } = {}) {
    super("failed_precondition", "the provider refused the token request", options);
  }
}

export function isTokenEndpointError(err: unknown): err is TokenEndpointError {
  return err instanceof TokenEndpointError;
}
