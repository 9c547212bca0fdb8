import type { AuditLog } from "../../audit/audit-log.js";
import type { AuthFailureSummary } from "../../audit/auth-failure-summary.js";
import type { AuthenticateOptions, CallerTransport } from "../../auth/caller-authenticator.js";
import {
  type CallerIdentity,
  type ScopeRequirement,
  scopeRequirementLabel,
  type UserIdentity,
} from "../../auth/identity.js";
import type { TokenVerifier } from "../../auth/token-verifier.js";
import { type BrokerErrorCode, isBrokerError, type RefusalReason } from "../../errors.js";
import type { Logger } from "../../log/logger.js";
import type { Metrics } from "../../observability/metrics.js";

/** The credentials a call carries, as the transport found them. */
export interface CallCredentials {
  readonly requestId: string;
  readonly callerKey: string | undefined;
  readonly bearerToken: string | undefined;
  readonly signal: AbortSignal;
  /** SHA-256 of the verified mTLS client certificate, if any (may be computed on first read). */
  readonly clientCertSha256: Buffer | undefined;
  /** The `dpop` metadata (RFC 9449), if one well-formed value was sent. */
  readonly dpopProof?: string | undefined;
  /** "/<package.Service>/<Method>" of the call: what a DPoP proof's `htu` must name. */
  readonly rpcPath?: string | undefined;
}

export interface UserCallGuard {
  /**
   * Both credentials or nothing (SPEC I3): the caller key with `scope`, then the user's live
   * access token. The caller key goes first: it is one indexed lookup, and without it no
   * token is ever verified, so a T2 attacker holding only tokens gets nowhere.
   */
  authorize(
    credentials: CallCredentials,
    scope: ScopeRequirement,
    options?: AuthenticateOptions,
  ): Promise<{ caller: CallerIdentity; user: UserIdentity }>;
  /**
   * For a call authorized with liveness "at-audit": when its `started` row found the caller key
   * dead (UNAUTHENTICATED, caller_key_invalid), the refusal is counted and summarised like any
   * other invalid key (review M4) and the key's cached parts dropped. Anything else: nothing.
   */
  refusedAtAudit(
    credentials: CallCredentials,
    scope: ScopeRequirement,
    caller: CallerIdentity,
    err: unknown,
  ): void;
  /** The caller key alone (admin calls act for no user, so they carry no user token). */
  authorizeCaller(credentials: CallCredentials, scope: ScopeRequirement): Promise<CallerIdentity>;
}

export function createUserCallGuard(deps: {
  callers: {
    authenticate(
      rawKey: string | undefined,
      scope: ScopeRequirement,
      transport: CallerTransport,
      options?: AuthenticateOptions,
    ): Promise<CallerIdentity>;
    forget?(keyId: string): void;
  };
  tokens: Pick<TokenVerifier, "verify">;
  audit?: AuditLog;
  /**
   * Where refusals without a valid caller key go instead of a row each (review M4). Without it
   * they are written one by one, as a test or an operator command that has no summary expects.
   */
  unauthenticated?: AuthFailureSummary;
  metrics?: Pick<Metrics, "authRefused">;
  logger?: Logger;
}): UserCallGuard {
  // Every refusal is audited (catalogue E47), best effort: an audit outage must not turn an
  // authentication failure into something else, and nothing is decrypted on this path anyway.
  // A refusal after a valid caller key (a bad user token, a missing scope) has its own row: the
  // calling application is known and accountable. One without a valid caller key comes from
  // anyone with network reach, so it is only counted and summarised (review M4).
  async function recordFailure(
    credentials: CallCredentials,
    scope: ScopeRequirement,
    caller: CallerIdentity | undefined,
    err: unknown,
  ) {
    if (!isBrokerError(err)) return;
    const reason: RefusalReason | BrokerErrorCode = err.reason ?? err.code;
    deps.metrics?.authRefused(reason);
    const knownCaller = caller !== undefined || err.reason === "caller_key_scope_missing";
    if (!knownCaller && deps.unauthenticated !== undefined) {
      deps.unauthenticated.note(reason);
      return;
    }
    if (deps.audit === undefined) return;
    await deps.audit
      .record({
        requestId: credentials.requestId,
        callerKeyId: caller?.keyId ?? null,
        userRef: null,
        action: "auth.failure",
        outcome: err.code === "permission_denied" ? "denied" : "error",
        code: err.code,
        detail: {
          scope: scopeRequirementLabel(scope),
          reason: caller === undefined ? "caller_key" : "user_token",
        },
      })
      .catch((auditErr: unknown) =>
        deps.logger?.error({ err: auditErr }, "audit: could not record an auth failure"),
      );
  }

  return {
    async authorize(credentials, scope, options) {
      let caller: CallerIdentity | undefined;
      try {
        // The credentials themselves, not a copy of the fingerprint: it is read lazily, and only
        // for keys bound to a certificate.
        caller = await deps.callers.authenticate(credentials.callerKey, scope, credentials, options);
        const user = await deps.tokens.verify(credentials.bearerToken, {
          signal: credentials.signal,
          dpopProof: credentials.dpopProof,
          rpcPath: credentials.rpcPath,
        });
        return { caller, user };
      } catch (err) {
        await recordFailure(credentials, scope, caller, err);
        throw err;
      }
    },
    refusedAtAudit(credentials, scope, caller, err) {
      if (caller.livenessPending !== true || !isBrokerError(err) || err.reason !== "caller_key_invalid")
        return;
      deps.callers.forget?.(caller.keyId);
      // A dead key is no known caller: counted and summarised, never a row each (review M4).
      void recordFailure(credentials, scope, undefined, err);
    },
    async authorizeCaller(credentials, scope) {
      try {
        return await deps.callers.authenticate(credentials.callerKey, scope, credentials);
      } catch (err) {
        await recordFailure(credentials, scope, undefined, err);
        throw err;
      }
    },
  };
}
