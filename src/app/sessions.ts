import { readFile } from "node:fs/promises";
import type { AuditLog } from "../audit/audit-log.js";
import { createJwksFetch } from "../auth/jwks-fetch.js";
import { createLogoutTokenVerifier } from "../auth/logout-token-verifier.js";
import { startRevocationPruning } from "../auth/session-revocation-pruning.js";
import { startRevocationSync } from "../auth/session-revocation-sync.js";
import type { SessionRevocations } from "../auth/session-revocations.js";
import type { Config } from "../config/config.js";
import { deriveSessionRef, deriveUserRef } from "../keys/user-ref.js";
import type { Logger } from "../log/logger.js";
import { createSessionService, type SessionService } from "../sessions/session-service.js";
import type { DatabaseHandle } from "../store/database.js";
import type { Lifecycle } from "./lifecycle.js";

// Confirm the listening connection several times per staleness bound, so one slow round trip
// does not fail calls; never more often than this.
const MIN_HEARTBEAT_MS = 250;
const RECONNECT_DELAY_MS = 1_000;
// Revocations past the maximum token age change no answer; deleting them is housekeeping.
const PRUNE_INTERVAL_MS = 10 * 60_000;

export interface SessionsDeps {
  readonly config: Pick<Config, "auth" | "sessions">;
  readonly database: DatabaseHandle;
  readonly pepper: Buffer;
  readonly audit: AuditLog;
  readonly revocations: SessionRevocations;
  readonly logger: Logger;
}

/**
 * Logout (issue 14): this replica's revocation view loaded and kept current (LISTEN/NOTIFY) before
 * any port opens, and the service that records logouts. The sync stops before the database closes.
 */
export async function openSessions(lifecycle: Lifecycle, deps: SessionsDeps): Promise<SessionService> {
  const { config, database, pepper, audit, revocations, logger } = deps;
  const staleness = config.sessions.revocationMaxStalenessMs;
  const sync = await startRevocationSync({
    database,
    revocations,
    heartbeatMs: Math.max(MIN_HEARTBEAT_MS, Math.floor(staleness / 4)),
    reconnectDelayMs: RECONNECT_DELAY_MS,
    logger,
  });
  lifecycle.defer("session revocation sync", () => sync.close());
  const pruning = startRevocationPruning({
    database,
    revocations,
    maxTokenAgeSec: config.auth.maxTokenAgeSec,
    clockToleranceSec: config.auth.clockToleranceSec,
    intervalMs: PRUNE_INTERVAL_MS,
    logger,
  });
  lifecycle.defer("session revocation pruning", async () => pruning.close());

  const audiences = config.sessions.logoutAudiences;
  let logoutTokens: ReturnType<typeof createLogoutTokenVerifier> | undefined;
  if (audiences !== undefined) {
    const { issuerCaFile } = config.auth;
    const jwksFetch = issuerCaFile === undefined ? undefined : createJwksFetch(await readFile(issuerCaFile));
    if (jwksFetch !== undefined) lifecycle.defer("logout JWKS agent", () => jwksFetch.close());
    logoutTokens = createLogoutTokenVerifier({
      issuer: config.auth.issuer,
      audiences,
      jwksUrl: config.auth.jwksUrl,
      jwksFetch: jwksFetch?.fetch,
      jwksCacheMaxAgeMs: config.auth.jwksCacheMaxAgeMs,
      jwksCooldownMs: config.auth.jwksCooldownMs,
      jwksTimeoutMs: config.auth.jwksTimeoutMs,
      clockToleranceSec: config.auth.clockToleranceSec,
      maxAgeSec: config.sessions.logoutTokenMaxAgeSec,
      deriveUserRef: (issuer, subject) => deriveUserRef(pepper, issuer, subject),
      deriveSessionRef: (issuer, sid) => deriveSessionRef(pepper, issuer, sid),
    });
  }
  return createSessionService({ db: database.db, logoutTokens, revocations, audit, logger });
}
