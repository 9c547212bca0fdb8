import { readFile } from "node:fs/promises";
import { createUserCallGuard, type UserCallGuard } from "../api/rpc/call-guard.js";
import type { AuditLog } from "../audit/audit-log.js";
import { createAuthFailureSummary } from "../audit/auth-failure-summary.js";
import { createCallerAuthenticator } from "../auth/caller-authenticator.js";
import { createDpopReplayGuard } from "../auth/dpop-replay-guard.js";
import type { UserIdentity } from "../auth/identity.js";
import { createJwksFetch } from "../auth/jwks-fetch.js";
import type { SessionRevocations } from "../auth/session-revocations.js";
import { createTokenVerifier } from "../auth/token-verifier.js";
import type { Config } from "../config/config.js";
import { deriveSessionRef, deriveUserRef } from "../keys/user-ref.js";
import type { Logger } from "../log/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { tracedCallerAuthenticator, tracedTokenVerifier } from "../observability/traced-parts.js";
import type { Tracing } from "../observability/tracing.js";
import { createCallerKeyLookup, markCallerKeyUsed } from "../store/caller-keys.repository.js";
import type { DatabaseHandle } from "../store/database.js";
import { claimDpopProofId, deleteExpiredDpopProofIds } from "../store/dpop-proof-ids.repository.js";
import type { Lifecycle } from "./lifecycle.js";

export interface AuthDeps {
  readonly config: Pick<Config, "auth" | "authFailureSummaryIntervalMs">;
  readonly database: DatabaseHandle;
  readonly pepper: Buffer;
  readonly audit: AuditLog;
  readonly metrics: Pick<Metrics, "authRefused">;
  readonly logger: Logger;
  /** Logouts (issue 14): checked on every token, and each one purges the caches it concerns. */
  readonly revocations: Pick<SessionRevocations, "check" | "subscribe">;
  /** Drops a user's unwrapped data keys from memory. */
  readonly forgetUserKeys: (userRef: Buffer) => void;
  /** A caller key this replica has suspended but not yet written as such (misuse signals). */
  readonly isSuspensionHeld?: (callerKeyId: string) => boolean;
  /** When tracing is on: the token and caller key checks inside spans. */
  readonly tracing?: Tracing | undefined;
}

/**
 * Who may call: the calling application by its caller key, the user by their access token,
 * both checked (and refusals audited) by one guard in front of every user RPC. Refusals without a
 * valid caller key are summarised; the summary is written once more on stop, before the audit
 * log it writes to closes.
 */
export async function createAuth(lifecycle: Lifecycle, deps: AuthDeps): Promise<UserCallGuard> {
  const { config, database, pepper, audit, metrics, logger, revocations } = deps;
  const { allowedAzp, tokenCacheMaxEntries, issuerCaFile, dpop, ...auth } = config.auth;
  // A private issuer CA is trusted by adding it, not by allowing http (L7).
  const jwksFetch = issuerCaFile === undefined ? undefined : createJwksFetch(await readFile(issuerCaFile));
  if (jwksFetch !== undefined) lifecycle.defer("issuer JWKS agent", () => jwksFetch.close());
  const tokens = createTokenVerifier({
    ...auth,
    jwksFetch: jwksFetch?.fetch,
    ...(allowedAzp === undefined ? {} : { allowedAzp }),
    cacheMaxEntries: tokenCacheMaxEntries,
    deriveUserRef: (issuer, subject) => deriveUserRef(pepper, issuer, subject),
    deriveSessionRef: (issuer, sid) => deriveSessionRef(pepper, issuer, sid),
    revocations,
    dpop:
      dpop === undefined ? undefined : { ...dpop, replay: openDpopReplayGuard(lifecycle, database, logger) },
  });
  revocations.subscribe((revoked) => {
    // A session logout names no user: the users are those whose cached tokens carried the session.
    const matches =
      revoked.kind === "user"
        ? (id: UserIdentity) => id.userRef.equals(revoked.ref)
        : (id: UserIdentity) => id.sessionRef?.equals(revoked.ref) === true;
    const evicted = tokens.forget(matches);
    if (revoked.kind === "user") deps.forgetUserKeys(revoked.ref);
    for (const identity of evicted) deps.forgetUserKeys(identity.userRef);
  });
  const callers = createCallerAuthenticator({
    lookup: createCallerKeyLookup(database.prepared),
    ...(deps.isSuspensionHeld === undefined ? {} : { isSuspensionHeld: deps.isSuspensionHeld }),
    markUsed: (id) => {
      // Best effort: "last used" is advisory and must not fail or slow the call.
      markCallerKeyUsed(database.db, id, new Date()).catch((err: unknown) =>
        logger.warn({ err }, "could not record caller key use"),
      );
    },
  });
  const unauthenticated = createAuthFailureSummary({
    audit,
    logger,
    intervalMs: config.authFailureSummaryIntervalMs,
  });
  lifecycle.defer("auth failure summary", () => unauthenticated.close());
  const { tracing } = deps;
  return createUserCallGuard({
    callers: tracing === undefined ? callers : tracedCallerAuthenticator(callers, tracing),
    tokens: tracing === undefined ? tokens : tracedTokenVerifier(tokens, tracing),
    audit,
    unauthenticated,
    metrics,
    logger,
  });
}

// Ids this replica remembers itself (about 100 B each): enough for a busy replica's proof window.
const DPOP_LOCAL_IDS = 100_000;
const DPOP_HOUSEKEEPING_MS = 60_000;

/**
 * DPoP proof ids are unique across replicas by one INSERT per proof into a shared table (a replay
 * to the same replica is refused from memory first); expired ids are deleted off the call path.
 */
function openDpopReplayGuard(lifecycle: Lifecycle, database: DatabaseHandle, logger: Logger) {
  const timer = setInterval(() => {
    deleteExpiredDpopProofIds(database.db, new Date()).catch((err: unknown) =>
      logger.warn({ err }, "could not delete expired DPoP proof ids"),
    );
  }, DPOP_HOUSEKEEPING_MS);
  timer.unref();
  lifecycle.defer("DPoP proof id housekeeping", () => clearInterval(timer));
  return createDpopReplayGuard({
    claimShared: (idHash, expiresAt) => claimDpopProofId(database.prepared, idHash, expiresAt),
    maxLocalEntries: DPOP_LOCAL_IDS,
    now: Date.now,
  });
}
