import { createHash } from "node:crypto";
import type { FetchImplementation, JWTPayload, ProtectedHeaderParameters } from "jose";
import { createRemoteJWKSet, customFetch, decodeProtectedHeader, errors, jwtVerify } from "jose";
import { BrokerError } from "../errors.js";
import { MAX_TOKEN_LENGTH } from "./token-precheck.js";

/** The `events` member that makes a JWT a back-channel logout token (OIDC Back-Channel Logout 1.0 §2.4). */
export const BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout";

/** Settings for verifying logout tokens from the same issuer as the access tokens. */
export interface LogoutTokenVerifierOptions {
  /** Exact `iss`, as for access tokens. */
  readonly issuer: string;
  /** The main app's client id(s): a logout token is addressed to the client the user logged in to. */
  readonly audiences: readonly string[];
  readonly jwksUrl: string;
  readonly jwksFetch?: FetchImplementation | undefined;
  readonly jwksCacheMaxAgeMs: number;
  readonly jwksCooldownMs: number;
  readonly jwksTimeoutMs: number;
  readonly clockToleranceSec: number;
  /** A logout token minted (`iat`) longer ago than this is stale and refused. */
  readonly maxAgeSec: number;
  readonly deriveUserRef: (issuer: string, subject: string) => Buffer;
  readonly deriveSessionRef: (issuer: string, sid: string) => Buffer;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

/** What a verified logout token ends. The raw `sub` and `sid` never leave the verifier. */
export interface VerifiedLogout {
  readonly userRef: Buffer | undefined;
  readonly sessionRef: Buffer | undefined;
  /** SHA-256 of (iss, jti): a token is accepted once across replicas. */
  readonly tokenIdHash: Buffer;
  /** Epoch seconds. */
  readonly issuedAt: number;
  /** Until when the id must be remembered: past this, the token is stale anyway. */
  readonly rememberUntil: Date;
}

export interface LogoutTokenVerifier {
  /** Throws INVALID_ARGUMENT for any token that is not a valid logout token, UNAVAILABLE if keys can't be fetched. */
  verify(token: string): Promise<VerifiedLogout>;
}

// Logout tokens may say they are one; an access token ("at+jwt") posted here is refused early.
const ALLOWED_TYP = new Set(["jwt", "logout+jwt"]);

/**
 * Verifies a back-channel logout token (§2.6): RS256 signature by a key in the issuer's JWKS, exact
 * `iss`, `aud` one of the app client ids, fresh `iat`, the back-channel logout event, `sub` and/or
 * `sid`, no `nonce` (so an ID token cannot pass as one), and a `jti`. Replay of the `jti` is the
 * caller's check (it needs the shared database). A compromised app host cannot forge one: it never
 * holds the issuer's signing key.
 */
export function createLogoutTokenVerifier(opts: LogoutTokenVerifierOptions): LogoutTokenVerifier {
  if (opts.audiences.length === 0 || opts.audiences.some((a) => a.length === 0)) {
    throw new BrokerError("internal", "logout token audiences must be non-empty client ids");
  }
  const now = opts.now ?? Date.now;
  // Its own key cache over the same JWKS URL: logouts are rare, and must not evict access-token keys.
  const jwks = createRemoteJWKSet(new URL(opts.jwksUrl), {
    cacheMaxAge: opts.jwksCacheMaxAgeMs,
    cooldownDuration: opts.jwksCooldownMs,
    timeoutDuration: opts.jwksTimeoutMs,
    ...(opts.jwksFetch === undefined ? {} : { [customFetch]: opts.jwksFetch }),
  });

  return {
    async verify(token) {
      precheck(token);
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, jwks, {
          algorithms: ["RS256"],
          issuer: opts.issuer,
          audience: [...opts.audiences],
          clockTolerance: opts.clockToleranceSec,
          maxTokenAge: opts.maxAgeSec,
          requiredClaims: ["iat", "jti", "events"],
          currentDate: new Date(now()),
        }));
      } catch (err) {
        throw toBrokerError(err);
      }
      return checkLogoutClaims(payload, opts, now() / 1000);
    },
  };
}

function precheck(token: string): void {
  if (token.length === 0 || token.length > MAX_TOKEN_LENGTH || token.split(".").length !== 3) {
    throw invalid("malformed logout token");
  }
  let header: ProtectedHeaderParameters;
  try {
    header = decodeProtectedHeader(token);
  } catch {
    throw invalid("malformed logout token");
  }
  // Key-naming headers would let the token choose its own key; jose ignores them, we refuse them.
  if (["jku", "jwk", "x5u", "x5c"].some((name) => Object.hasOwn(header, name))) {
    throw invalid("logout token header not allowed");
  }
  const typ = header.typ;
  if (typ !== undefined && !ALLOWED_TYP.has(typ.toLowerCase())) {
    throw invalid("logout token type not accepted");
  }
}

function checkLogoutClaims(
  payload: JWTPayload,
  opts: LogoutTokenVerifierOptions,
  nowSec: number,
): VerifiedLogout {
  const events = payload.events;
  if (
    typeof events !== "object" ||
    events === null ||
    Array.isArray(events) ||
    !isPlainObject((events as Record<string, unknown>)[BACKCHANNEL_LOGOUT_EVENT])
  ) {
    throw invalid("logout token lacks the back-channel logout event");
  }
  if (Object.hasOwn(payload, "nonce")) throw invalid("logout token must not carry a nonce");
  const { sub, sid, jti, iat } = payload;
  const subject = typeof sub === "string" && sub.length > 0 ? sub : undefined;
  const session = typeof sid === "string" && sid.length > 0 ? sid : undefined;
  if ((sub !== undefined && subject === undefined) || (sid !== undefined && session === undefined)) {
    throw invalid("logout token claims invalid");
  }
  if (subject === undefined && session === undefined) throw invalid("logout token names no user or session");
  if (typeof jti !== "string" || jti.length === 0 || typeof iat !== "number") {
    throw invalid("logout token claims invalid");
  }
  // jose refuses an `iat` too old only; one from the future was minted by a skewed or forged clock.
  if (iat > nowSec + opts.clockToleranceSec) throw invalid("logout token is issued in the future");
  return {
    userRef: subject === undefined ? undefined : opts.deriveUserRef(opts.issuer, subject),
    sessionRef: session === undefined ? undefined : opts.deriveSessionRef(opts.issuer, session),
    tokenIdHash: createHash("sha256").update(`${opts.issuer.length}:${opts.issuer}${jti}`).digest(),
    issuedAt: iat,
    rememberUntil: new Date((iat + opts.maxAgeSec + opts.clockToleranceSec) * 1000),
  };
}

function isPlainObject(value: unknown): boolean {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function invalid(message: string, cause?: unknown): BrokerError {
  return new BrokerError("invalid_argument", message, cause === undefined ? undefined : { cause });
}

/** Caller-safe errors; the cause keeps jose's code only (its claim errors carry the payload). */
function toBrokerError(err: unknown): BrokerError {
  if (err instanceof BrokerError) return err;
  const cause = err instanceof errors.JOSEError ? new Error(`${err.code}: ${err.message}`) : err;
  if (
    err instanceof errors.JWKSTimeout ||
    err instanceof errors.JWKSInvalid ||
    (err instanceof errors.JOSEError && err.code === "ERR_JOSE_GENERIC") ||
    (err instanceof TypeError && err.message === "fetch failed") ||
    (err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError"))
  ) {
    return new BrokerError("unavailable", "identity provider keys unavailable", { cause });
  }
  if (err instanceof errors.JWTExpired) {
    // maxTokenAge is reported as an expiry of `iat`.
    return invalid(err.claim === "iat" ? "logout token is stale" : "logout token expired", cause);
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case "iat":
        return invalid("logout token is stale", cause);
      case "iss":
        return invalid("logout token issuer not accepted", cause);
      case "aud":
        return invalid("logout token audience not accepted", cause);
      default:
        return invalid("logout token claims invalid", cause);
    }
  }
  if (err instanceof errors.JWSSignatureVerificationFailed || err instanceof errors.JWKSNoMatchingKey) {
    return invalid("logout token signature invalid", cause);
  }
  if (err instanceof errors.JOSEError) return invalid("malformed logout token", cause);
  return new BrokerError("internal", "internal error", { cause });
}
