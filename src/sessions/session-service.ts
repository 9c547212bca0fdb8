import type { Kysely } from "kysely";
import type { AuditLog } from "../audit/audit-log.js";
import type { UserIdentity } from "../auth/identity.js";
import type { LogoutTokenVerifier, VerifiedLogout } from "../auth/logout-token-verifier.js";
import type { SessionRevocations } from "../auth/session-revocations.js";
import { failedPrecondition, invalidArgument } from "../errors.js";
import type { Logger } from "../log/logger.js";
import type { Database } from "../store/schema.js";
import { recordLogout, type StoredRevocation } from "../store/session-revocations.repository.js";

/** Where a logout came from: the issuer itself, the main app forwarding it, or the user. */
export type LogoutSource = "backchannel" | "rpc" | "self";

/** Who asked, for the audit row. */
export interface LogoutActor {
  readonly requestId: string;
  readonly callerKeyId: string | null;
}

/** Ends sessions (issue 14): every token issued before the logout is refused on every replica. */
export interface SessionService {
  /** A signed logout token from the issuer, posted by it or forwarded by the main app. */
  endWithLogoutToken(token: string, source: "backchannel" | "rpc", actor: LogoutActor): Promise<void>;
  /** The user, with their live token, ends all their sessions (this token too). */
  endOwnSessions(user: UserIdentity, actor: LogoutActor): Promise<void>;
}

export interface SessionServiceDeps {
  readonly db: Kysely<Database>;
  /** Undefined when no logout audience is configured: only users' own logouts are possible. */
  readonly logoutTokens: LogoutTokenVerifier | undefined;
  readonly revocations: Pick<SessionRevocations, "apply">;
  readonly audit: Pick<AuditLog, "record">;
  readonly logger: Pick<Logger, "error">;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

/**
 * A logout is committed (token id claimed, revocations raised, NOTIFY sent) in one transaction,
 * then applied to this replica at once; the others apply it when the notice arrives. A replayed
 * token changes nothing. A revocation covers tokens issued up to the later of the logout token's
 * `iat` and this replica's clock, so a skewed clock errs towards refusing.
 */
export function createSessionService(deps: SessionServiceDeps): SessionService {
  const now = deps.now ?? Date.now;
  const nowSec = (): number => Math.floor(now() / 1000);

  async function commit(
    revocations: StoredRevocation[],
    tokenId: { hash: Buffer; expiresAt: Date } | undefined,
  ): Promise<void> {
    const recorded = await recordLogout(deps.db, { tokenId, revocations });
    if (recorded.outcome === "replayed") throw invalidArgument("logout token already used");
    for (const revocation of recorded.revocations) deps.revocations.apply(revocation);
  }

  async function audit(
    actor: LogoutActor,
    source: LogoutSource,
    userRef: Buffer | undefined,
    sessionRef: Buffer | undefined,
  ): Promise<void> {
    // The logout already holds: an audit outage is logged, it must not make the logout look failed.
    await deps.audit
      .record({
        requestId: actor.requestId,
        callerKeyId: actor.callerKeyId,
        userRef: userRef ?? null,
        action: "session.end",
        outcome: "ok",
        detail: { source, ...(sessionRef === undefined ? {} : { sessionRef: sessionRef.toString("hex") }) },
      })
      .catch((err: unknown) => deps.logger.error({ err }, "audit: could not record a logout"));
  }

  return {
    async endWithLogoutToken(token, source, actor) {
      if (deps.logoutTokens === undefined) {
        throw failedPrecondition("logout tokens are not accepted: KEYBROKER_LOGOUT_AUDIENCES is not set");
      }
      const logout: VerifiedLogout = await deps.logoutTokens.verify(token);
      const revokedBefore = Math.max(logout.issuedAt, nowSec());
      const revocations: StoredRevocation[] = [];
      if (logout.userRef !== undefined)
        revocations.push({ kind: "user", ref: logout.userRef, revokedBefore });
      if (logout.sessionRef !== undefined) {
        revocations.push({ kind: "session", ref: logout.sessionRef, revokedBefore });
      }
      await commit(revocations, { hash: logout.tokenIdHash, expiresAt: logout.rememberUntil });
      await audit(actor, source, logout.userRef, logout.sessionRef);
    },

    async endOwnSessions(user, actor) {
      const revokedBefore = Math.max(user.issuedAt ?? 0, nowSec());
      await commit([{ kind: "user", ref: user.userRef, revokedBefore }], undefined);
      await audit(actor, "self", user.userRef, undefined);
    },
  };
}
