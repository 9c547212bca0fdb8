import { BrokerError, type RefusalReason } from "../errors.js";

/** Longest access token we look at; Auth0 tokens are ~1 KB, so this leaves room for many claims. */
export const MAX_TOKEN_LENGTH = 8 * 1024;
/** Longest `kid` we accept; Auth0 kids are ~40 chars. */
export const MAX_KID_LENGTH = 128;

// Three non-empty base64url segments and nothing else: rules out JWE (five segments), JSON
// serialisation, padding, whitespace and the empty signature of `alg: none` in one cheap test.
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
const PRINTABLE_ASCII = /^[\x20-\x7e]+$/;
// Headers that name a key or where to fetch one. We never fetch or trust keys named by the
// token itself: the only keys are those in the configured issuer's JWKS (RFC 8725 §3.10).
const KEY_NAMING_HEADERS = ["jku", "x5u", "jwk", "x5c"] as const;
// RFC 7515 §4.1.9 lets `typ` omit the "application/" prefix; RFC 9068 names "at+jwt".
const ALLOWED_TYP = new Set(["jwt", "at+jwt", "application/jwt", "application/at+jwt"]);
const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Cheap structural checks on a bearer token, run before any signature check or JWKS fetch so
 * that junk costs microseconds and never causes network traffic. Throws "unauthenticated" with
 * a message that never echoes the token.
 */
export function precheckAccessToken(token: string | undefined): asserts token is string {
  if (token === undefined || token.length === 0) {
    throw reject("user access token missing", "token_missing");
  }
  if (token.length > MAX_TOKEN_LENGTH) {
    throw reject("user access token too long");
  }
  if (!COMPACT_JWS.test(token)) {
    throw reject("malformed user access token");
  }
  const header = decodeHeader(token.slice(0, token.indexOf(".")));

  // Pin the algorithm here as well as in jwtVerify: `none` (any casing) and HS256 signed with
  // the public key as secret (RFC 8725 §2.1) die before any key is looked up.
  if (header.alg !== "RS256") {
    throw reject("unsupported user access token algorithm");
  }
  for (const name of KEY_NAMING_HEADERS) {
    if (Object.hasOwn(header, name)) {
      throw reject("user access token header not allowed");
    }
  }
  const kid = header.kid;
  if (
    typeof kid !== "string" ||
    kid.length === 0 ||
    kid.length > MAX_KID_LENGTH ||
    !PRINTABLE_ASCII.test(kid)
  ) {
    throw reject("user access token key id invalid");
  }
  const typ = header.typ;
  if (typ !== undefined && (typeof typ !== "string" || !ALLOWED_TYP.has(typ.toLowerCase()))) {
    throw reject("user access token type not accepted");
  }
}

function decodeHeader(segment: string): Record<string, unknown> {
  // A base64url string of length 4n+1 cannot encode whole bytes; Buffer would silently drop it.
  if (segment.length % 4 === 1) {
    throw reject("malformed user access token");
  }
  let json: string;
  let parsed: unknown;
  try {
    json = utf8.decode(Buffer.from(segment, "base64url"));
    parsed = JSON.parse(json);
  } catch {
    // No cause: V8's JSON error quotes the input, which is part of the token.
    throw reject("malformed user access token");
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw reject("malformed user access token");
  }
  // JSON.parse keeps the last duplicate; another parser may keep the first. Refuse the ambiguity.
  if (hasDuplicateTopLevelKeys(json)) {
    throw reject("malformed user access token");
  }
  return parsed as Record<string, unknown>;
}

/** Scans already-valid JSON for a repeated member name in the top-level object. */
function hasDuplicateTopLevelKeys(json: string): boolean {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      const start = i;
      for (i++; i < json.length && json[i] !== '"'; i++) {
        if (json[i] === "\\") i++;
      }
      if (depth === 1 && expectKey) {
        // Parse the literal so "\u0061lg" and "alg" count as the same name.
        const key = JSON.parse(json.slice(start, i + 1)) as string;
        if (seen.has(key)) return true;
        seen.add(key);
        expectKey = false;
      }
    } else if (c === "{" || c === "[") {
      depth++;
      expectKey = c === "{" && depth === 1;
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  return false;
}

function reject(message: string, reason: RefusalReason = "token_malformed"): BrokerError {
  return new BrokerError("unauthenticated", message, { reason });
}
