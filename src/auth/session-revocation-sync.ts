import type { Logger } from "../log/logger.js";
import type { DatabaseHandle, NotificationSubscription } from "../store/database.js";
import {
  decodeRevocationNotice,
  loadRevocations,
  SESSION_REVOCATIONS_CHANNEL,
} from "../store/session-revocations.repository.js";
import type { SessionRevocations } from "./session-revocations.js";

export interface RevocationSyncOptions {
  readonly database: Pick<DatabaseHandle, "db" | "listen" | "kind">;
  readonly revocations: Pick<SessionRevocations, "apply" | "confirmCurrent" | "confirmAlwaysCurrent">;
  /** How often the listening connection is confirmed alive (a round trip on it). */
  readonly heartbeatMs: number;
  /** Wait between attempts to listen again after the connection was lost. */
  readonly reconnectDelayMs: number;
  readonly logger: Pick<Logger, "warn" | "info">;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

export interface RevocationSync {
  close(): Promise<void>;
}

/**
 * Keeps this replica's revocation view current: LISTEN first, then load the whole table (so a
 * revocation committed in between arrives one way or the other, and applying it twice is
 * harmless), then a heartbeat round trip on the listening connection confirms the view at a
 * steady pace. A lost connection stops the confirmations, so once the view is older than its
 * staleness bound user calls fail closed; meanwhile it retries, and on reconnect re-listens and
 * reloads everything it may have missed. Resolves once the first load is done; throws if it fails.
 */
export async function startRevocationSync(opts: RevocationSyncOptions): Promise<RevocationSync> {
  const { database, revocations, logger } = opts;
  const now = opts.now ?? Date.now;
  let subscription: NotificationSubscription | undefined;
  let closed = false;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let confirming = false;

  const onNotice = (payload: string): void => {
    const revocation = decodeRevocationNotice(payload);
    if (revocation === undefined) {
      logger.warn("session revocations: ignored a notice this version does not understand");
      return;
    }
    revocations.apply(revocation);
  };

  const onLost = (err: unknown): void => {
    if (closed) return;
    subscription = undefined;
    logger.warn(
      { err: { message: err instanceof Error ? err.message : "unknown" } },
      "session revocations: listening connection lost; calls fail closed once the view is stale",
    );
    scheduleReconnect();
  };

  async function connect(): Promise<void> {
    const listening = await database.listen(SESSION_REVOCATIONS_CHANNEL, onNotice, onLost);
    try {
      const at = now();
      for (const revocation of await loadRevocations(database.db)) revocations.apply(revocation);
      if (database.kind === "pglite") revocations.confirmAlwaysCurrent();
      else revocations.confirmCurrent(at);
    } catch (err) {
      await listening.close();
      throw err;
    }
    if (closed) {
      await listening.close();
      return;
    }
    subscription = listening;
  }

  function scheduleReconnect(): void {
    if (closed || reconnectTimer !== undefined) return;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      connect().then(
        () => logger.info("session revocations: listening again, view reloaded"),
        (err: unknown) => {
          logger.warn(
            { err: { message: err instanceof Error ? err.message : "unknown" } },
            "session revocations: could not listen again; retrying",
          );
          scheduleReconnect();
        },
      );
    }, opts.reconnectDelayMs);
  }

  await connect();

  const heartbeat = setInterval(() => {
    const current = subscription;
    if (current === undefined || confirming) return;
    confirming = true;
    const at = now();
    current
      .confirm()
      .then(() => revocations.confirmCurrent(at))
      // A failed confirm has already reported the loss (onLost), which reconnects.
      .catch(() => undefined)
      .finally(() => {
        confirming = false;
      });
  }, opts.heartbeatMs);
  heartbeat.unref();

  return {
    async close() {
      closed = true;
      clearInterval(heartbeat);
      if (reconnectTimer !== undefined) clearTimeout(reconnectTimer);
      const current = subscription;
      subscription = undefined;
      await current?.close();
    },
  };
}
