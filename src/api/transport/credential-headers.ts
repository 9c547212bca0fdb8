/**
 * Reads the two call credentials from header values, identically for both transports.
 * Anything ambiguous counts as absent, so the auth layer answers UNAUTHENTICATED instead
 * of guessing which of two credentials the caller meant.
 */

// RFC 6750 b64token; a JWT uses a subset. One value only: HTTP joins repeated headers
// with ", ", which this rejects.
const BEARER = /^bearer +([A-Za-z0-9\-._~+/]+=*)$/i;
// Visible ASCII without a comma: a comma means the header was sent more than once.
const CALLER_KEY = /^[\x21-\x2b\x2d-\x7e]+$/;

/** The token of `Bearer <token>` (scheme case-insensitive), or undefined if malformed. */
export function bearerTokenFrom(value: string | undefined): string | undefined {
  if (value === undefined) {
    return undefined;
  }
  return BEARER.exec(value)?.[1];
}

/** The caller key if `value` is a single well-formed header value, else undefined. */
export function callerKeyFrom(value: string | undefined): string | undefined {
  return value !== undefined && CALLER_KEY.test(value) ? value : undefined;
}

// A compact JWS: three base64url segments. One value only (a repeated header joins with ", ").
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

/** The DPoP proof if `value` is one well-formed compact JWS, else undefined (counts as absent). */
export function dpopProofFrom(value: string | undefined): string | undefined {
  return value !== undefined && COMPACT_JWS.test(value) ? value : undefined;
}
