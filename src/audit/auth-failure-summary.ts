import { randomUUID } from "node:crypto";
import type { Logger } from "../log/logger.js";
import type { AuditLog } from "./audit-log.js";

/**
 * Refusals of calls that presented no valid caller key, summarised instead of written one by one.
 * Such a caller is nobody the broker knows: a row each would let anyone with network reach grow
 * the append-only trail and contend on the chain head (review M4). So each refusal is counted,
 * logged at most once per reason per `logIntervalMs` (with how many lines were suppressed), and
 * written to the trail as one `auth.failure` row per reason per `intervalMs`, its count in
 * `detail.count` and the window's length in `detail.durationMs`.
 */
export interface AuthFailureSummary {
  /** Counts one refusal; never throws and never waits. `reason` must come from a closed set. */
  note(reason: string): void;
  /** Writes the pending counts now (one row per reason). Never rejects. */
  flush(): Promise<void>;
  /** Flushes, then counts nothing more (shutdown, before the audit log closes). */
  close(): Promise<void>;
}

export interface AuthFailureSummaryDeps {
  readonly audit: Pick<AuditLog, "record">;
  readonly logger?: Logger | undefined;
  /** How long counts accumulate before they are written; default 60 s. */
  readonly intervalMs?: number;
  /** At most one log line per reason per this long; default 10 s. */
  readonly logIntervalMs?: number;
  /** Epoch milliseconds. */
  readonly now?: () => number;
}

const DEFAULT_INTERVAL_MS = 60_000;
const DEFAULT_LOG_INTERVAL_MS = 10_000;
// Reasons come from closed sets; the cap only stops a bug from growing the maps without bound.
const MAX_REASONS = 64;
const OVERFLOW_REASON = "other";

interface LogState {
  lastAt: number;
  suppressed: number;
}

export function createAuthFailureSummary(deps: AuthFailureSummaryDeps): AuthFailureSummary {
  const now = deps.now ?? Date.now;
  const intervalMs = deps.intervalMs ?? DEFAULT_INTERVAL_MS;
  const logIntervalMs = deps.logIntervalMs ?? DEFAULT_LOG_INTERVAL_MS;
  let counts = new Map<string, number>();
  let windowStart = now();
  const logStates = new Map<string, LogState>();
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;

  function bounded(map: ReadonlyMap<string, unknown>, reason: string): string {
    return map.has(reason) || map.size < MAX_REASONS ? reason : OVERFLOW_REASON;
  }

  function logRateLimited(reason: string, at: number): void {
    const key = bounded(logStates, reason);
    const state = logStates.get(key);
    if (state !== undefined && at - state.lastAt < logIntervalMs) {
      state.suppressed += 1;
      return;
    }
    deps.logger?.warn(
      { reason: key, suppressed: state?.suppressed ?? 0 },
      "refused a call without a valid caller key",
    );
    logStates.set(key, { lastAt: at, suppressed: 0 });
  }

  async function writeSummary(): Promise<void> {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (counts.size === 0) return;
    const pending = counts;
    const durationMs = Math.max(0, now() - windowStart);
    counts = new Map();
    windowStart = now();
    const requestId = randomUUID();
    await Promise.all(
      [...pending].map(([reason, count]) =>
        deps.audit
          .record({
            requestId,
            callerKeyId: null,
            userRef: null,
            action: "auth.failure",
            outcome: "error",
            code: "unauthenticated",
            detail: { reason, count, durationMs },
          })
          .catch((err: unknown) =>
            deps.logger?.error({ err, reason, count }, "audit: could not record an auth failure summary"),
          ),
      ),
    );
  }

  return {
    note(reason) {
      if (closed) return;
      const at = now();
      logRateLimited(reason, at);
      if (counts.size === 0) windowStart = at;
      const key = bounded(counts, reason);
      counts.set(key, (counts.get(key) ?? 0) + 1);
      // A timer only while something is pending: an idle broker writes no empty summaries.
      if (timer === undefined) {
        timer = setTimeout(() => void writeSummary(), intervalMs);
        timer.unref();
      }
    },
    flush: writeSummary,
    async close() {
      closed = true;
      await writeSummary();
    },
  };
}
