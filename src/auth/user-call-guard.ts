import type { CallerIdentity, CallerScope, UserIdentity } from "./identity.js";

/** The credentials a call carries, as the transport found them. */
export interface CallCredentials {
  readonly callerKey: string | undefined;
  readonly bearerToken: string | undefined;
  readonly signal: AbortSignal;
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
}

export function createUserCallGuard(deps: {
  callers: { authenticate(rawKey: string | undefined, scope: CallerScope): Promise<CallerIdentity> };
  tokens: { verify(token: string | undefined, options?: { signal?: AbortSignal }): Promise<UserIdentity> };
}): UserCallGuard {
  return {
    async authorize(credentials, scope) {
      const caller = await deps.callers.authenticate(credentials.callerKey, scope);
      const user = await deps.tokens.verify(credentials.bearerToken, { signal: credentials.signal });
      return { caller, user };
    },
  };
}
