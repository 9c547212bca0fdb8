import type { AuditLog } from "../../audit/audit-log.js";
import type { CallerTransport } from "../../auth/caller-authenticator.js";
import type { CallerIdentity, CallerScope, UserIdentity } from "../../auth/identity.js";
import { isBrokerError } from "../../errors.js";
import type { Logger } from "../../log/logger.js";

/** The credentials a call carries, as the transport found them. */
export interface CallCredentials {
  readonly requestId: string;
  readonly callerKey: string | undefined;
  readonly bearerToken: string | undefined;
  readonly signal: AbortSignal;
  /** SHA-256 of the verified mTLS client certificate, if any (may be computed on first read). */
  readonly clientCertSha256: Buffer | undefined;
}

export interface UserCallGuard {
  /**
   * Both credentials or nothing (SPEC I3): the caller key with `scope`, then the user's live
   * access token. The caller key goes first: it is one indexed lookup, and without it no
   * token is ever verified, so a T2 attacker holding only tokens gets nowhere.
   */
  authorize(
    credentials: CallCredentials,
    scope: CallerScope,
  ): Promise<{ caller: CallerIdentity; user: UserIdentity }>;
  /** The caller key alone (admin calls act for no user, so they carry no user token). */
  authorizeCaller(credentials: CallCredentials, scope: CallerScope): Promise<CallerIdentity>;
}

export function createUserCallGuard(deps: {
  callers: {
    authenticate(
      rawKey: string | undefined,
      scope: CallerScope,
      transport: CallerTransport,
    ): Promise<CallerIdentity>;
  };
  tokens: { verify(token: string | undefined, options?: { signal?: AbortSignal }): Promise<UserIdentity> };
  audit?: AuditLog;
  logger?: Logger;
}): UserCallGuard {
  // Every refusal is audited (catalogue E47), best effort: an audit outage must not turn an
  // authentication failure into something else, and nothing is decrypted on this path anyway.
  async function recordFailure(
    credentials: CallCredentials,
    scope: CallerScope,
    caller: CallerIdentity | undefined,
    err: unknown,
  ) {
    if (deps.audit === undefined || !isBrokerError(err)) return;
    await deps.audit
      .record({
        requestId: credentials.requestId,
        callerKeyId: caller?.keyId ?? null,
        userRef: null,
        action: "auth.failure",
        outcome: err.code === "permission_denied" ? "denied" : "error",
        code: err.code,
        detail: { scope, reason: caller === undefined ? "caller_key" : "user_token" },
      })
      .catch((auditErr: unknown) =>
        deps.logger?.error({ err: auditErr }, "audit: could not record an auth failure"),
      );
  }

  return {
    async authorize(credentials, scope) {
      let caller: CallerIdentity | undefined;
      try {
        // The credentials themselves, not a copy of the fingerprint: it is read lazily, and only
        // for keys bound to a certificate.
        caller = await deps.callers.authenticate(credentials.callerKey, scope, credentials);
        const user = await deps.tokens.verify(credentials.bearerToken, { signal: credentials.signal });
        return { caller, user };
      } catch (err) {
        await recordFailure(credentials, scope, caller, err);
        throw err;
      }
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
