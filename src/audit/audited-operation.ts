import type { BrokerErrorCode } from "../errors.js";
import { BrokerError, isBrokerError } from "../errors.js";
import type { Logger } from "../log/logger.js";
import type { SecretForUse, SecretForUseKey } from "../store/secrets.repository.js";
import type { AuditAction, AuditDetail, AuditOutcome } from "./audit-event.js";
import type { AuditLog } from "./audit-log.js";

/** Who is acting, as far as the audit trail may know it (never a token or a raw `sub`). */
export interface AuditActor {
  readonly requestId: string;
  readonly callerKeyId: string | null;
  readonly userRef: Uint8Array | null;
  /**
   * The caller key's revocation, suspension and expiry are checked by the `started` row's own
   * statement (issue 17 item 2): it rejects UNAUTHENTICATED, and nothing runs, if the key is dead.
   */
  readonly callerKeyLivenessPending?: boolean;
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

export interface AuditedReadSpec<R, T> extends AuditedOperationSpec<T> {
  /**
   * Detail for the final row from what `read` found, success or failure (e.g. a proxied call's
   * operation class, known once the sealed row names its provider): a refusal's row names it too.
   */
  readonly readDetail?: (read: R) => AuditDetail;
}

export interface AuditedRunner {
  run<T>(actor: AuditActor, spec: AuditedOperationSpec<T>, operation: () => Promise<T>): Promise<T>;
  /**
   * Like `run`, but `read` starts at once, concurrently with the `started` row, and `use` gets its
   * result only after that row is committed: the read overlaps the audit round trip. `read` must
   * only fetch what is still sealed (ciphertext, metadata), never decrypt or change anything.
   */
  runWithRead<R, T>(
    actor: AuditActor,
    spec: AuditedReadSpec<R, T>,
    read: () => Promise<R>,
    use: (read: R) => Promise<T>,
  ): Promise<T>;
  /**
   * Like `runWithRead`, for a sensitive operation on one of the user's stored secrets: the statement
   * that commits the `started` row also reads the sealed secret (no round trip of its own, issue
   * 17 item 2). `plan` gets what it found (undefined: no such secret of this user's) only after
   * that row is committed, and must not decrypt; `use` then runs as in `runWithRead`.
   */
  runReadingSecret<R, T>(
    actor: AuditActor,
    spec: AuditedReadSpec<R, T>,
    secret: SecretForUseKey,
    plan: (found: SecretForUse | undefined) => Promise<R>,
    use: (planned: R) => Promise<T>,
  ): Promise<T>;
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

  const eventOf = (actor: AuditActor, spec: Spec, outcome: AuditOutcome, code: BrokerErrorCode | null) => ({
    requestId: actor.requestId,
    callerKeyId: actor.callerKeyId,
    userRef: actor.userRef,
    action: spec.action,
    target: spec.target ?? null,
    outcome,
    code,
    ...(spec.detail === undefined ? {} : { detail: spec.detail }),
  });

  function record(
    actor: AuditActor,
    spec: Spec,
    outcome: AuditOutcome,
    code: BrokerErrorCode | null,
    deferred = false,
    requireLiveCallerKey = false,
  ) {
    return audit.record(
      eventOf(actor, spec, outcome, code),
      requireLiveCallerKey ? { deferred, requireLiveCallerKey } : { deferred },
    );
  }

  function finish(actor: AuditActor, spec: Spec, error?: unknown, deferred = false): Promise<void> {
    const code = error === undefined ? null : codeOf(error);
    const outcome = code === null ? "ok" : code === "permission_denied" ? "denied" : "error";
    return record(actor, spec, outcome, code, deferred);
  }

  /**
   * The outcome row. A read's row is committed before the read returns anything. A sensitive
   * operation's outcome is recorded but not waited for: it has already happened (a key was used,
   * a row changed), so its row failing could not undo it, only mislead the caller into a retry;
   * the `started` row committed before it ran is the proof. Deferred, it shares the next batch
   * (usually the next call's `started` row) instead of costing a round trip of its own.
   */
  async function recordOutcome(actor: AuditActor, sensitive: boolean, final: Spec, error?: unknown) {
    const written = finish(actor, final, error, sensitive);
    const logged = written.catch((auditErr: unknown) =>
      logger.error(
        { err: auditErr, requestId: actor.requestId },
        error === undefined
          ? "audit: could not record an operation's outcome"
          : "audit: could not record a failed operation",
      ),
    );
    // Reads return nothing unless their row is committed; a failed read's row is best effort.
    if (sensitive) return;
    if (error === undefined) await written;
    else await logged;
  }

  async function runWithRead<R, T>(
    actor: AuditActor,
    spec: AuditedReadSpec<R, T>,
    read: () => Promise<R>,
    use: (read: R) => Promise<T>,
  ): Promise<T> {
    // A caller whose key is still to be checked may only start what commits a `started` row first.
    if (actor.callerKeyLivenessPending === true && !spec.sensitive) {
      throw new BrokerError("internal", "an unchecked caller key may only run sensitive operations");
    }
    const reading = read();
    // Observed at once: if the `started` row fails, nothing awaits the read, and its rejection must
    // not surface as unhandled. `use` still sees the real outcome through `reading`.
    reading.catch(() => undefined);
    if (spec.sensitive) {
      // Throws `unavailable` if the trail cannot be written: the operation never starts.
      // With a pending caller key it also throws `unauthenticated` if the key is no longer live.
      await record(actor, spec, "started", null, false, actor.callerKeyLivenessPending === true);
    }
    return runStarted(actor, spec, reading, use);
  }

  async function runReadingSecret<R, T>(
    actor: AuditActor,
    spec: AuditedReadSpec<R, T>,
    secret: SecretForUseKey,
    plan: (found: SecretForUse | undefined) => Promise<R>,
    use: (planned: R) => Promise<T>,
  ): Promise<T> {
    if (!spec.sensitive) {
      throw new BrokerError("internal", "only a sensitive operation reads with its started row");
    }
    // Throws `unavailable` if the trail cannot be written (nothing is read or run), and
    // `unauthenticated` if a pending caller key is no longer live.
    const found = await audit.recordReading(
      eventOf(actor, spec, "started", null),
      secret,
      actor.callerKeyLivenessPending === true ? { requireLiveCallerKey: true } : {},
    );
    // A `plan` that throws at once (no such secret) is an outcome like any other: it gets its row.
    const planning = (async () => plan(found))();
    return runStarted(actor, spec, planning, use);
  }

  /** The rest of an operation whose `started` row (if it needs one) is committed. */
  async function runStarted<R, T>(
    actor: AuditActor,
    spec: AuditedReadSpec<R, T>,
    reading: Promise<R>,
    use: (read: R) => Promise<T>,
  ): Promise<T> {
    let result: T;
    let readDetail: AuditDetail | undefined;
    try {
      const found = await reading;
      readDetail = spec.readDetail?.(found);
      result = await use(found);
    } catch (err) {
      const detail = readDetail === undefined ? spec.detail : { ...spec.detail, ...readDetail };
      await recordOutcome(
        actor,
        spec.sensitive,
        { ...spec, ...(detail === undefined ? {} : { detail }) },
        err,
      );
      throw err;
    }
    const target = spec.resultTarget?.(result) ?? spec.target;
    await recordOutcome(actor, spec.sensitive, {
      action: spec.action,
      ...(target === undefined ? {} : { target }),
      detail: { ...spec.detail, ...readDetail, ...spec.resultDetail?.(result) },
    });
    return result;
  }

  return {
    finish: (actor, spec, error) => finish(actor, spec, error),
    runWithRead,
    runReadingSecret,
    run: (actor, spec, operation) => runWithRead(actor, spec, async () => undefined, operation),
  };
}
