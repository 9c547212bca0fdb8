import type { FetchImplementation, JWTPayload, JWTVerifyGetKey, JWTVerifyOptions } from "jose";
import { createRemoteJWKSet, customFetch, errors, jwtVerify } from "jose";
import { BrokerError, type RefusalReason, untilAborted } from "../errors.js";
import { createDpopKeyCache, type DpopProofPolicy, verifyDpopProof } from "./dpop-proof.js";
import type { DpopReplayGuard } from "./dpop-replay-guard.js";
import type { UserIdentity } from "./identity.js";
import type { SessionRevocations } from "./session-revocations.js";
import { createTokenCache } from "./token-cache.js";
import { precheckAccessToken } from "./token-precheck.js";

/** Settings for verifying Auth0 user access tokens (SPEC I3). */
export interface TokenVerifierOptions {
  /** Exact `iss`, e.g. "https://tenant.eu.auth0.com/" (Auth0 issuers end with "/"; never normalised). */
  readonly issuer: string;
  /** Our API identifier; `aud` must be it or an array containing it. */
  readonly audience: string;
  readonly jwksUrl: string;
  /** Must appear in `scope` or in the RBAC `permissions` array. */
  readonly requiredPermission: string;
  /** If set, `azp` must equal it (the main app's client id). */
  readonly allowedAzp?: string;
  /** 0..30 seconds. */
  readonly clockToleranceSec: number;
  /**
   * If set, a token minted (`iat`) longer ago than this is refused whatever its `exp`, so an
   * operator can shorten the life of a harvested token below the issuer's lifetime (F2).
   */
  readonly maxTokenAgeSec?: number | undefined;
  /** How long fetched keys are trusted without a refetch; also the most stale a key can be used. */
  readonly jwksCacheMaxAgeMs: number;
  /** Minimum time between refetches triggered by an unknown `kid`. */
  readonly jwksCooldownMs: number;
  /**
   * A verify that finds the key set older than this refreshes it in the background (not
   * awaited), so a key the issuer publishes ahead of use is known before its first token (F4).
   * Default: half of `jwksCacheMaxAgeMs`.
   */
  readonly jwksRefreshAheadMs?: number;
  readonly jwksTimeoutMs: number;
  /** Fetches the JWKS instead of the global fetch, e.g. one trusting the issuer's private CA. */
  readonly jwksFetch?: FetchImplementation | undefined;
  readonly cacheMaxEntries: number;
  /** Maps the verified (issuer, sub) to the opaque user reference (an HMAC under the pepper). */
  readonly deriveUserRef: (issuer: string, subject: string) => Buffer;
  /** Maps a token's (issuer, sid) to an opaque session reference; without it `sid` is ignored. */
  readonly deriveSessionRef?: ((issuer: string, sid: string) => Buffer) | undefined;
  /**
   * Logouts (issue 14), checked on every verify, cached or not: a revoked token is refused
   * UNAUTHENTICATED "session ended", and a stale view fails closed (UNAVAILABLE).
   */
  readonly revocations?: Pick<SessionRevocations, "check"> | undefined;
  /** DPoP (RFC 9449, issue 14); without it a DPoP-bound token (`cnf.jkt`) is refused. */
  readonly dpop?: DpopOptions | undefined;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

/** How sender-constrained tokens are checked. */
export interface DpopOptions extends DpopProofPolicy {
  /** Refuse every token that is not DPoP-bound. */
  readonly required: boolean;
  /** e.g. "https://keybroker.example.com": an RPC's `htu` is this plus "/<package.Service>/<Method>". */
  readonly htuOrigin: string;
  readonly replay: DpopReplayGuard;
}

/** What the transport knows of the call, beyond the token. */
export interface VerifyOptions {
  readonly signal?: AbortSignal | undefined;
  /** The `dpop` metadata, if any. */
  readonly dpopProof?: string | undefined;
  /** "/keybroker.v1.ProxyService/Call": the RPC a DPoP proof must name. */
  readonly rpcPath?: string | undefined;
}

/** Turns a bearer token into the user it speaks for, or throws a BrokerError. */
export interface TokenVerifier {
  verify(token: string | undefined, options?: VerifyOptions): Promise<UserIdentity>;
  /** Drops verified tokens from the cache (a logout); returns whose they were. */
  forget(matches: (identity: UserIdentity) => boolean): UserIdentity[];
}

const MAX_CLOCK_TOLERANCE_SEC = 30;
// Duplicate kids appear briefly during some rotations; each candidate costs one RSA verify.
const MAX_KEYS_PER_KID = 4;
const MACHINE_GRANT = "client-credentials";

/**
 * Verifies RS256 access tokens against the issuer's remote JWKS, then applies the user-call
 * policy (no machine tokens, allowed client, required permission). The raw `sub` is used only
 * to derive `userRef` and never leaves this function: not in the result, an error or a log.
 *
 * JWKS behaviour (jose's remote set): keys are refetched when older than `jwksCacheMaxAgeMs`;
 * an unknown `kid` triggers at most one refetch per `jwksCooldownMs`, so random kids cannot
 * hammer the issuer; concurrent refetches are shared. If a needed refetch fails (down, non-200,
 * timeout) the call is "unavailable", never "unauthenticated": a provider outage must not look
 * like the user's fault. Stated staleness: keys older than `jwksCacheMaxAgeMs` are not used.
 */
export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const jwksUrl = checkOptions(opts);
  const now = opts.now ?? Date.now;
  const jwks = createRemoteJWKSet(jwksUrl, {
    cacheMaxAge: opts.jwksCacheMaxAgeMs,
    cooldownDuration: opts.jwksCooldownMs,
    timeoutDuration: opts.jwksTimeoutMs,
    ...(opts.jwksFetch === undefined ? {} : { [customFetch]: opts.jwksFetch }),
  });
  const cache = createTokenCache({ maxEntries: opts.cacheMaxEntries, now });
  // One proof key per bound token, at most: the same bound as the token cache.
  const dpopKeys = createDpopKeyCache(Math.max(opts.cacheMaxEntries, 1));
  const refreshAheadMs = opts.jwksRefreshAheadMs ?? opts.jwksCacheMaxAgeMs / 2;
  let lastRefreshAt = now();

  function refreshAhead(): void {
    if (now() - lastRefreshAt < refreshAheadMs || jwks.reloading) return;
    lastRefreshAt = now();
    // Not awaited: an outage shows on the verify that needs a fetch, as UNAVAILABLE, not here.
    jwks.reload().catch(() => undefined);
  }

  /**
   * jose's key lookup, with one distinction it does not make: a kid that is unknown while the
   * unknown-kid refetch is cooling down was never checked against the issuer's current keys. It
   * may be a new key (Auth0 rotation) that a junk token's refetch just missed, so the answer is a
   * retryable UNAVAILABLE; a kid still unknown right after a refetch is UNAUTHENTICATED (A5, F4).
   */
  const getKey: JWTVerifyGetKey = async (header, token) => {
    // A stale set is refetched before the lookup, so then the kid is checked against the issuer.
    const unchecked = jwks.coolingDown && jwks.fresh;
    try {
      return await jwks(header, token);
    } catch (err) {
      if (err instanceof errors.JWKSNoMatchingKey && unchecked) {
        throw new BrokerError("unavailable", "token signing key not yet known; retry shortly", {
          cause: err,
        });
      }
      throw err;
    }
  };

  async function verifyUncached(token: string): Promise<UserIdentity> {
    refreshAhead();
    const payload = await verifySignature(token, getKey, {
      algorithms: ["RS256"],
      issuer: opts.issuer,
      audience: opts.audience,
      clockTolerance: opts.clockToleranceSec,
      requiredClaims: ["exp", "sub"],
      currentDate: new Date(now()),
      // jose then requires `iat` and refuses one too old or in the future.
      ...(opts.maxTokenAgeSec === undefined ? {} : { maxTokenAge: opts.maxTokenAgeSec }),
    });
    const { sub, exp } = checkUserPolicy(payload, opts);
    const boundKeyThumbprint = boundKeyOf(payload);
    const iat = checkIssuedAt(payload, now() / 1000, opts.clockToleranceSec);
    // The cache must not outlive the maximum age either.
    const expiresAt =
      opts.maxTokenAgeSec === undefined || iat === undefined ? exp : Math.min(exp, iat + opts.maxTokenAgeSec);
    const sid = payload.sid;
    const sessionRef =
      opts.deriveSessionRef !== undefined && typeof sid === "string" && sid.length > 0
        ? opts.deriveSessionRef(opts.issuer, sid)
        : undefined;
    return {
      userRef: opts.deriveUserRef(opts.issuer, sub),
      expiresAt,
      ...(iat === undefined ? {} : { issuedAt: iat }),
      ...(sessionRef === undefined ? {} : { sessionRef }),
      ...(boundKeyThumbprint === undefined ? {} : { boundKeyThumbprint }),
    };
  }

  /**
   * Every call with a bound token, cached or not, carries a fresh proof by the bound key for this
   * RPC and this token, used once across replicas. With `required`, unbound tokens are refused.
   */
  async function checkSenderConstraint(
    token: string,
    identity: UserIdentity,
    options: VerifyOptions | undefined,
  ) {
    const jkt = identity.boundKeyThumbprint;
    const dpop = opts.dpop;
    if (jkt === undefined) {
      if (dpop?.required === true) {
        throw new BrokerError(
          "unauthenticated",
          "this broker accepts only DPoP-bound access tokens (cnf.jkt)",
          {
            reason: "token_invalid",
          },
        );
      }
      return;
    }
    if (dpop === undefined || options?.rpcPath === undefined) {
      throw new BrokerError("unauthenticated", "DPoP-bound access tokens are not accepted on this broker", {
        reason: "token_invalid",
      });
    }
    const proof = await verifyDpopProof(
      {
        proof: options.dpopProof,
        accessToken: token,
        jkt,
        htu: `${dpop.htuOrigin}${options.rpcPath}`,
        now: now(),
        keys: dpopKeys,
      },
      dpop,
    );
    await dpop.replay.claim(proof.idHash, proof.rememberUntil);
  }

  return {
    async verify(token, options) {
      const signal = options?.signal;
      if (signal?.aborted === true) throw abortError(signal);
      precheckAccessToken(token);

      const cached = cache.get(token);
      if (cached !== undefined) {
        opts.revocations?.check(cached);
        await checkSenderConstraint(token, cached, options);
        return cached;
      }

      // jose cannot be interrupted: a cancelled call stops waiting and the result is dropped.
      const work = verifyUncached(token);
      const identity = signal === undefined ? await work : await untilAborted(work, signal, abortError);
      opts.revocations?.check(identity);
      cache.set(token, identity);
      await checkSenderConstraint(token, identity, options);
      return identity;
    },
    forget: (matches) => cache.evictWhere(matches),
  };
}

async function verifySignature(
  token: string,
  keys: JWTVerifyGetKey,
  options: JWTVerifyOptions,
): Promise<JWTPayload> {
  try {
    return (await jwtVerify(token, keys, options)).payload;
  } catch (err) {
    if (!(err instanceof errors.JWKSMultipleMatchingKeys)) throw toBrokerError(err);
    // Several JWKS keys share the kid: try each (jose's documented pattern), a bounded few.
    let tried = 0;
    for await (const key of err) {
      if (++tried > MAX_KEYS_PER_KID) break;
      try {
        return (await jwtVerify(token, key, options)).payload;
      } catch (inner) {
        if (inner instanceof errors.JWSSignatureVerificationFailed) continue;
        throw toBrokerError(inner);
      }
    }
    throw toBrokerError(new errors.JWSSignatureVerificationFailed());
  }
}

/** Rules for a token acting for a user, applied after the signature and standard claims pass. */
function checkUserPolicy(payload: JWTPayload, opts: TokenVerifierOptions): { sub: string; exp: number } {
  const { sub, exp } = payload;
  if (typeof sub !== "string" || sub.length === 0 || typeof exp !== "number") {
    throw new BrokerError("unauthenticated", "user access token lacks required claims", {
      reason: "token_invalid",
    });
  }
  // A client-credentials token speaks for an application, not a person (SPEC I3, catalogue A9).
  const gty = payload.gty;
  const machine =
    sub.endsWith("@clients") ||
    (typeof gty === "string" && gty.includes(MACHINE_GRANT)) ||
    (Array.isArray(gty) && gty.includes(MACHINE_GRANT));
  if (machine) {
    throw new BrokerError("permission_denied", "machine tokens cannot act for a user", {
      reason: "token_not_for_user",
    });
  }
  if (opts.allowedAzp !== undefined && payload.azp !== opts.allowedAzp) {
    throw new BrokerError("permission_denied", "user access token was issued to another client", {
      reason: "token_wrong_client",
    });
  }
  if (!hasPermission(payload, opts.requiredPermission)) {
    throw new BrokerError("permission_denied", "user access token lacks the required permission", {
      reason: "token_permission_missing",
    });
  }
  return { sub, exp };
}

// RFC 7638 SHA-256 thumbprint, base64url without padding.
const JKT = /^[A-Za-z0-9_-]{43}$/;

/**
 * The key a token is bound to (RFC 9449 §6.1 `cnf.jkt`), if any. A `cnf` this broker cannot
 * enforce (another confirmation method, a malformed thumbprint) refuses the token: ignoring it
 * would accept a sender-constrained token from anyone holding it.
 */
function boundKeyOf(payload: JWTPayload): string | undefined {
  const { cnf } = payload;
  if (cnf === undefined) return undefined;
  const jkt = typeof cnf === "object" && cnf !== null ? (cnf as Record<string, unknown>).jkt : undefined;
  if (typeof jkt !== "string" || !JKT.test(jkt)) {
    throw new BrokerError(
      "unauthenticated",
      "user access token has a confirmation (cnf) this broker cannot honour",
      {
        reason: "token_invalid",
      },
    );
  }
  return jkt;
}

/**
 * Auth0 sends no `nbf`, so `iat` is the only sign of when a token was minted; one "issued" in
 * the future (beyond the clock tolerance) was minted by a skewed or forged clock and is refused
 * (catalogue F2). jose checks this only when a maximum age is set, so it is checked here always.
 */
function checkIssuedAt(payload: JWTPayload, nowSec: number, toleranceSec: number): number | undefined {
  const { iat } = payload;
  if (iat === undefined) return undefined;
  if (typeof iat !== "number" || !Number.isFinite(iat) || iat > nowSec + toleranceSec) {
    throw new BrokerError("unauthenticated", "user access token is issued in the future");
  }
  return iat;
}

/** `scope` is split on single spaces and matched exactly, so "secrets:useX" is not "secrets:use". */
function hasPermission(payload: JWTPayload, permission: string): boolean {
  const { scope, permissions } = payload;
  if (typeof scope === "string" && scope.split(" ").includes(permission)) return true;
  return Array.isArray(permissions) && permissions.some((p) => p === permission);
}

/**
 * Maps jose and fetch failures to caller-safe errors. The cause is rebuilt from the error's
 * code and fixed message only: jose's claim errors carry the whole payload (with `sub`), which
 * a log serializer would print.
 */
function toBrokerError(err: unknown): BrokerError {
  if (err instanceof BrokerError) return err;
  const cause = err instanceof errors.JOSEError ? new Error(`${err.code}: ${err.message}`) : err;
  const unauthenticated = (message: string, reason: RefusalReason = "token_invalid") =>
    new BrokerError("unauthenticated", message, { cause, reason });

  if (err instanceof errors.JWTExpired) return unauthenticated("user access token expired", "token_expired");
  if (err instanceof errors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case "nbf":
        return unauthenticated("user access token not yet valid");
      case "iss":
        return unauthenticated("user access token issuer not accepted");
      case "aud":
        return unauthenticated("user access token audience not accepted");
      default:
        return unauthenticated(
          err.reason === "missing"
            ? "user access token lacks required claims"
            : "user access token claims invalid",
        );
    }
  }
  if (err instanceof errors.JWSSignatureVerificationFailed) {
    return unauthenticated("user access token signature invalid");
  }
  if (err instanceof errors.JWKSNoMatchingKey) {
    return unauthenticated("user access token signed by an unknown key");
  }
  if (
    err instanceof errors.JWKSTimeout ||
    err instanceof errors.JWKSInvalid ||
    // ERR_JOSE_GENERIC is only thrown by the JWKS fetch: non-200 or a body that is not JSON.
    (err instanceof errors.JOSEError && err.code === "ERR_JOSE_GENERIC") ||
    isFetchFailure(err)
  ) {
    return new BrokerError("unavailable", "identity provider keys unavailable", { cause });
  }
  if (
    err instanceof errors.JWSInvalid ||
    err instanceof errors.JWTInvalid ||
    err instanceof errors.JOSEAlgNotAllowed ||
    err instanceof errors.JOSENotSupported ||
    err instanceof errors.JWKInvalid
  ) {
    return unauthenticated("malformed user access token", "token_malformed");
  }
  return new BrokerError("internal", "internal error", { cause });
}

/** undici rejects `fetch` with a TypeError("fetch failed") for refused, reset or DNS failures. */
function isFetchFailure(err: unknown): boolean {
  return (
    (err instanceof TypeError && err.message === "fetch failed") ||
    (err instanceof Error && (err.name === "AbortError" || err.name === "TimeoutError"))
  );
}

function abortError(signal: AbortSignal): BrokerError {
  const reason: unknown = signal.reason;
  return reason instanceof Error && reason.name === "TimeoutError"
    ? new BrokerError("deadline_exceeded", "deadline exceeded while verifying the user access token")
    : new BrokerError("unavailable", "call cancelled while verifying the user access token");
}

/** Fails fast on a misconfiguration that would weaken verification. */
function checkOptions(opts: TokenVerifierOptions): URL {
  const problems: string[] = [];
  if (opts.issuer.length === 0) problems.push("issuer is empty");
  if (opts.audience.length === 0) problems.push("audience is empty");
  if (opts.requiredPermission.length === 0 || opts.requiredPermission.includes(" ")) {
    problems.push("requiredPermission must be one non-empty word");
  }
  const tolerance = opts.clockToleranceSec;
  if (!Number.isInteger(tolerance) || tolerance < 0 || tolerance > MAX_CLOCK_TOLERANCE_SEC) {
    problems.push(`clockToleranceSec must be an integer in 0..${MAX_CLOCK_TOLERANCE_SEC}`);
  }
  for (const [name, value] of [
    ["jwksCacheMaxAgeMs", opts.jwksCacheMaxAgeMs],
    ["jwksCooldownMs", opts.jwksCooldownMs],
    ["jwksTimeoutMs", opts.jwksTimeoutMs],
    ["cacheMaxEntries", opts.cacheMaxEntries],
  ] as const) {
    if (!Number.isInteger(value) || value < 0) problems.push(`${name} must be a non-negative integer`);
  }
  let url: URL | undefined;
  try {
    url = new URL(opts.jwksUrl);
  } catch {
    problems.push("jwksUrl is not a URL");
  }
  // Keys fetched over plain HTTP could be swapped in transit; only a local dev issuer may use it.
  if (url !== undefined && url.protocol !== "https:" && !(url.protocol === "http:" && isLoopback(url))) {
    problems.push("jwksUrl must be https (http only on a loopback host)");
  }
  if (problems.length > 0 || url === undefined) {
    throw new BrokerError("internal", `invalid token verifier options: ${problems.join("; ")}`);
  }
  return url;
}

function isLoopback(url: URL): boolean {
  return url.hostname === "127.0.0.1" || url.hostname === "[::1]" || url.hostname === "localhost";
}
