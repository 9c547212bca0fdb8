import type { BrokerErrorCode } from "../errors.js";
import { isBrokerError } from "../errors.js";
import type { Logger } from "../log/logger.js";
import type { AuditAction, AuditDetail, AuditOutcome } from "./audit-event.js";
import type { AuditLog } from "./audit-log.js";

/** Who is acting, as far as the audit trail may know it (never a token or a raw `sub`). */
export interface AuditActor {
  readonly requestId: string;
  readonly callerKeyId: string | null;
  readonly userRef: Uint8Array | null;
}

export interface AuditedOperationSpec<T> {
  readonly action: AuditAction;
  readonly target?: string;
  readonly detail?: AuditDetail;
  /**
   * Sensitive operations (changes, uses of a key) commit a `started` row before they run: if
   * it cannot be written they do not run at all, so nothing is decrypted unaudited (I8).
   */
  readonly sensitive: boolean;
  /** Extra detail for the final row, from the result (e.g. the upstream status). */
  readonly resultDetail?: (result: T) => AuditDetail;
  /** The target, when only the result knows it (a newly created secret's id). */
  readonly resultTarget?: (result: T) => string;
}

export interface AuditedRunner {
  run<T>(actor: AuditActor, spec: AuditedOperationSpec<T>, operation: () => Promise<T>): Promise<T>;
  /** A final row for an operation whose outcome is known only later (a stream's end). */
  finish(
    actor: AuditActor,
    spec: { action: AuditAction; target?: string; detail?: AuditDetail },
    error?: unknown,
  ): Promise<void>;
}

export function createAuditedRunner(deps: { audit: AuditLog; logger: Logger }): AuditedRunner {
  const { audit, logger } = deps;

  const codeOf = (err: unknown): BrokerErrorCode => (isBrokerError(err) ? err.code : "internal");

  type Spec = { action: AuditAction; target?: string; detail?: AuditDetail };

  function record(actor: AuditActor, spec: Spec, outcome: AuditOutcome, code: BrokerErrorCode | null) {
    return audit.record({
      requestId: actor.requestId,
      callerKeyId: actor.callerKeyId,
      userRef: actor.userRef,
      action: spec.action,
      target: spec.target ?? null,
      outcome,
      code,
      ...(spec.detail === undefined ? {} : { detail: spec.detail }),
    });
  }

  async function finish(actor: AuditActor, spec: Spec, error?: unknown): Promise<void> {
    const code = error === undefined ? null : codeOf(error);
    await record(actor, spec, code === null ? "ok" : code === "permission_denied" ? "denied" : "error", code);
  }

  return {
    finish,
    async run(actor, spec, operation) {
      if (spec.sensitive) {
        // Throws `unavailable` if the trail cannot be written: the operation never starts.
        await record(actor, spec, "started", null);
      }
      let result: Awaited<ReturnType<typeof operation>>;
      try {
        result = await operation();
      } catch (err) {
        await finish(actor, spec, err).catch((auditErr: unknown) =>
          logger.error(
            { err: auditErr, requestId: actor.requestId },
            "audit: could not record a failed operation",
          ),
        );
        throw err;
      }
      const target = spec.resultTarget?.(result) ?? spec.target;
      const final = {
        action: spec.action,
        ...(target === undefined ? {} : { target }),
        detail: { ...spec.detail, ...spec.resultDetail?.(result) },
      };
      if (spec.sensitive) {
        // The operation has happened (a key was used, a row changed): failing the call now would
        // mislead the caller into retrying it. The `started` row already proves it was attempted.
        await finish(actor, final).catch((auditErr: unknown) =>
          logger.error(
            { err: auditErr, requestId: actor.requestId },
            "audit: could not record an operation's outcome",
          ),
        );
      } else {
        // Reads return nothing unless their row is committed.
        await finish(actor, final);
      }
      return result;
    },
  };
}
