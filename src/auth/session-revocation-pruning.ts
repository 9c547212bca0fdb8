import type { Logger } from "../log/logger.js";
import type { DatabaseHandle } from "../store/database.js";
import { pruneRevocations } from "../store/session-revocations.repository.js";
import type { SessionRevocations } from "./session-revocations.js";

// Slack on top of the age limit and the clock tolerance: pruning a little late costs a row.
const MARGIN_SEC = 60;

/**
 * The oldest revocation time still worth keeping, or undefined when none may ever go.
 *
 * A revocation refuses tokens issued at or before its time T. With a maximum token age A (jose
 * then requires `iat` and refuses `now - iat > A + tolerance`), every such token is refused by age
 * once `now > T + A + tolerance`, so the row no longer changes any answer and can be deleted.
 * Without a maximum age nothing bounds how long a pre-logout token stays valid (its `exp` is the
 * issuer's choice, and a token without `iat` is refused only by the revocation), so nothing is
 * pruned: operators who want the table bounded set KEYBROKER_MAX_TOKEN_AGE_SEC.
 */
export function revocationCutoffSec(
  nowMs: number,
  maxTokenAgeSec: number | undefined,
  clockToleranceSec: number,
): number | undefined {
  if (maxTokenAgeSec === undefined) return undefined;
  return Math.floor(nowMs / 1000) - maxTokenAgeSec - clockToleranceSec - MARGIN_SEC;
}

export interface RevocationPruningOptions {
  readonly database: Pick<DatabaseHandle, "db">;
  readonly revocations: Pick<SessionRevocations, "forgetBefore">;
  readonly maxTokenAgeSec: number | undefined;
  readonly clockToleranceSec: number;
  readonly intervalMs: number;
  readonly logger: Pick<Logger, "warn" | "info">;
  /** Epoch milliseconds; injectable for tests. */
  readonly now?: () => number;
}

export interface RevocationPruning {
  /** One pass: the rows deleted (any replica may have deleted them first) and entries forgotten. */
  runOnce(): Promise<{ readonly deleted: number; readonly forgotten: number }>;
  close(): void;
}

/**
 * Keeps session_revocations and every replica's in-memory view bounded: each replica deletes and
 * forgets revocations past the cutoff on a timer, off every call's path. Any replica may delete
 * first; the others' DELETEs then find nothing, and forgetting is local to each.
 */
export function startRevocationPruning(opts: RevocationPruningOptions): RevocationPruning {
  const now = opts.now ?? Date.now;
  let running = false;

  async function runOnce() {
    const cutoff = revocationCutoffSec(now(), opts.maxTokenAgeSec, opts.clockToleranceSec);
    if (cutoff === undefined) return { deleted: 0, forgotten: 0 };
    // Forget locally first: it is always safe past the cutoff, even if the DELETE fails.
    const forgotten = opts.revocations.forgetBefore(cutoff);
    const deleted = await pruneRevocations(opts.database.db, cutoff);
    if (deleted > 0 || forgotten > 0) {
      opts.logger.info(
        { deleted, forgotten },
        "session revocations: pruned those past the maximum token age",
      );
    }
    return { deleted, forgotten };
  }

  const timer =
    opts.maxTokenAgeSec === undefined
      ? undefined
      : setInterval(() => {
          if (running) return;
          running = true;
          runOnce()
            .catch((err: unknown) => {
              opts.logger.warn(
                { err: { message: err instanceof Error ? err.message : "unknown" } },
                "session revocations: pruning failed; retrying at the next interval",
              );
            })
            .finally(() => {
              running = false;
            });
        }, opts.intervalMs);
  timer?.unref();

  return {
    runOnce,
    close() {
      if (timer !== undefined) clearInterval(timer);
    },
  };
}
