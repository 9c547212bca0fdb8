import type { AuditLog } from "../audit/audit-log.js";
import type { Logger } from "../log/logger.js";
import type { MisuseSignalName } from "./signal-event.js";

export interface CallerKeySuspenderDeps {
  /** Marks the key's row suspended; false when there was no live, unsuspended key to mark. */
  readonly suspend: (callerKeyId: string, reason: MisuseSignalName, at: Date) => Promise<boolean>;
  readonly audit: Pick<AuditLog, "record">;
  readonly logger: Logger;
  readonly now?: () => number;
  /** Delay between attempts to write the suspension while the database refuses it. */
  readonly retryDelayMs?: number;
  readonly maxAttempts?: number;
}

/** Suspends caller keys in response to a signal: on this replica at once, on every replica via the row. */
export interface CallerKeySuspender {
  suspend(callerKeyId: string, reason: MisuseSignalName, requestId: string): void;
  /**
   * True while this replica holds a suspension it has not yet written: fail closed, the key is
   * refused here even before (or if never) the row says so. Read by the caller authenticator.
   */
  isHeld(callerKeyId: string): boolean;
  /** Settles when no write is pending (tests, shutdown). */
  idle(): Promise<void>;
}

const DEFAULT_RETRY_DELAY_MS = 1_000;
const DEFAULT_MAX_ATTEMPTS = 30;

export function createCallerKeySuspender(deps: CallerKeySuspenderDeps): CallerKeySuspender {
  const now = deps.now ?? Date.now;
  const retryDelayMs = deps.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS;
  const maxAttempts = deps.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
  const held = new Set<string>();
  const pending = new Set<Promise<void>>();

  async function write(callerKeyId: string, reason: MisuseSignalName, requestId: string): Promise<void> {
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      try {
        const marked = await deps.suspend(callerKeyId, reason, new Date(now()));
        // The row is now the truth on every replica (and a CLI reinstate can clear it).
        held.delete(callerKeyId);
        if (marked) {
          await deps.audit.record({
            requestId,
            callerKeyId,
            action: "caller_key.suspend",
            target: callerKeyId,
            outcome: "ok",
            detail: { reason },
          });
          deps.logger.warn({ callerKeyId, reason }, "caller key suspended by a misuse signal");
        }
        return;
      } catch (err) {
        deps.logger.error({ err, callerKeyId, attempt }, "could not write a caller key suspension");
        await new Promise((resolve) => setTimeout(resolve, retryDelayMs).unref());
      }
    }
    // Still held: this replica keeps refusing the key until it restarts (fail closed).
    deps.logger.error({ callerKeyId }, "caller key suspension never written; held on this replica only");
  }

  return {
    suspend(callerKeyId, reason, requestId) {
      if (held.has(callerKeyId)) return;
      held.add(callerKeyId);
      const writing = write(callerKeyId, reason, requestId).catch((err: unknown) =>
        deps.logger.error({ err, callerKeyId }, "could not audit a caller key suspension"),
      );
      pending.add(writing);
      void writing.finally(() => pending.delete(writing));
    },
    isHeld: (callerKeyId) => held.size > 0 && held.has(callerKeyId),
    async idle() {
      while (pending.size > 0) await Promise.all(pending);
    },
  };
}
