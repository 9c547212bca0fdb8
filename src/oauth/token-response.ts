import type { OAuthSettings } from "../outbound/oauth-schema.js";
import {
  InvalidGrant,
  ProviderError,
  ProviderUnavailable,
  registeredErrorCode,
} from "./token-endpoint-errors.js";

/** Tokens a token endpoint issued. The holder zeroes both buffers when done. */
export interface TokenSet {
  readonly accessToken: Buffer;
  /** Present when the provider issued (or rotated) one and the registry says it issues them. */
  readonly refreshToken: Buffer | undefined;
  /** Seconds from now; undefined when the provider gave no lifetime. */
  readonly expiresInSeconds: number | undefined;
  /** The granted scopes when the provider said; undefined when it did not (then: as requested). */
  readonly scopes: readonly string[] | undefined;
}

const MAX_TOKEN_CHARS = 8192;
// RFC 6749 appendix A.12/A.17: tokens are VSCHAR (printable ASCII, space included in theory; no
// provider we know uses spaces and a space would break the Bearer header, so it is refused).
const TOKEN = /^[\x21-\x7e]+$/;
// Ten years: a longer lifetime is a unit mistake, not a token.
const MAX_EXPIRES_IN = 10 * 365 * 86_400;

/**
 * Reads a token endpoint's answer strictly: a JSON object, `access_token` and `token_type` of the
 * declared kind, optional `expires_in`, `refresh_token` and `scope` of the right types. Extra
 * members are ignored and never kept. An error answer (RFC 6749 §5.2, including GitHub's and
 * Slack's HTTP 200 errors) throws; only its registered `error` code is kept, never its text.
 */
export function parseTokenResponse(status: number, body: Buffer, oauth: OAuthSettings): TokenSet {
  // An outage answers whatever it likes (an HTML page, nothing): the status alone decides.
  if (status >= 500 || status === 429) {
    throw new ProviderUnavailable({ cause: new Error(`token endpoint answered ${status}`) });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(body.toString("utf8"));
  } catch {
    throw new ProviderError({
      cause: new Error(`token endpoint answered ${status} with a body that is not JSON`),
    });
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ProviderError({ cause: new Error(`token endpoint answered ${status} without a JSON object`) });
  }
  const doc = parsed as Record<string, unknown>;
  if ("error" in doc || doc.ok === false || status < 200 || status > 299) {
    throw tokenErrorOf(status, doc);
  }
  const accessToken = tokenString(doc.access_token, "access_token");
  const tokenType = doc.token_type;
  const accepted = oauth.tokenTypes ?? ["bearer"];
  if (typeof tokenType !== "string" || !accepted.some((t) => t.toLowerCase() === tokenType.toLowerCase())) {
    throw new ProviderError({ cause: new Error("token_type is missing or not one the registry accepts") });
  }
  const expiresInSeconds = expiresIn(doc.expires_in);
  let refreshToken: Buffer | undefined;
  if (doc.refresh_token !== undefined && doc.refresh_token !== null && oauth.refresh.refreshTokens) {
    refreshToken = Buffer.from(tokenString(doc.refresh_token, "refresh_token"), "latin1");
  }
  let scopes: string[] | undefined;
  if (doc.scope !== undefined && doc.scope !== null) {
    if (typeof doc.scope !== "string" || doc.scope.length > 8192) {
      throw new ProviderError({ cause: new Error("scope is not a string") });
    }
    // GitHub answers commas where it was asked with spaces: read either.
    scopes = [...new Set(doc.scope.split(/[ ,]+/).filter((s) => s !== ""))].sort();
  }
  return { accessToken: Buffer.from(accessToken, "latin1"), refreshToken, expiresInSeconds, scopes };
}

/** The error a non-token answer stands for (RFC 6749 §5.2; RFC 7009 §2.2.1 for revocation). */
export function tokenErrorOf(status: number, doc: Readonly<Record<string, unknown>>): Error {
  const oauthError = registeredErrorCode(doc.error);
  const cause = new Error(`token endpoint answered ${status} error=${oauthError}`);
  if (
    status >= 500 ||
    status === 429 ||
    oauthError === "server_error" ||
    oauthError === "temporarily_unavailable"
  ) {
    return new ProviderUnavailable({ oauthError, cause });
  }
  if (oauthError === "invalid_grant") return new InvalidGrant({ oauthError, cause });
  return new ProviderError({ oauthError, cause });
}

function tokenString(value: unknown, name: string): string {
  if (
    typeof value !== "string" ||
    value.length === 0 ||
    value.length > MAX_TOKEN_CHARS ||
    !TOKEN.test(value)
  ) {
    // The name only: the value may be a token.
    throw new ProviderError({ cause: new Error(`${name} is missing or not a token`) });
  }
  return value;
}

function expiresIn(value: unknown): number | undefined {
  if (value === undefined || value === null) return undefined;
  // Some providers send it as a decimal string; both forms are whole seconds.
  const n = typeof value === "string" && /^\d{1,10}$/.test(value) ? Number(value) : value;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 0 || n > MAX_EXPIRES_IN) {
    throw new ProviderError({ cause: new Error("expires_in is not a whole number of seconds") });
  }
  return n;
}
