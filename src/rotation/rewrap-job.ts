import { setTimeout as sleepFor } from "node:timers/promises";
import type { Kysely } from "kysely";
import { BrokerError, isBrokerError } from "../errors.js";
import type { EncryptionContext, Keyring, WrappedKey } from "../keys/keyring.js";
import { PEPPER_CONTEXT, PEPPER_STATE } from "../keys/pepper.js";
import { userKeyContext } from "../keys/user-data-keys.js";
import type { Logger } from "../log/logger.js";
import { findBrokerState } from "../store/broker-state.repository.js";
import { asBuffer } from "../store/bytes.js";
import {
  compareAndSetBrokerState,
  compareAndSetUserKeys,
  countUsersByMasterKey,
  findUsersNotOnKey,
  findWrappedUserKey,
  type UserKeyChange,
  type WrappedUserKey,
} from "../store/rewrap.repository.js";
import type { Database } from "../store/schema.js";
import { createRateLimiter, type RateLimiter } from "./rate-limiter.js";
import { createWriteBatcher } from "./write-batcher.js";

/** What a rewrap to a target master key has left to do. */
export interface RewrapPlan {
  /** Users whose data key is not wrapped under the target. */
  readonly users: number;
  /** Whether the sealed pepper is not wrapped under the target. */
  readonly pepper: boolean;
  /** Those users per master key id that wraps them now. */
  readonly byKey: Record<string, number>;
}

export interface RewrapProgress {
  /** Rows settled so far (rewrapped, skipped or failed), the pepper included. */
  readonly done: number;
  /** Rows the plan counted at the start (more may appear while the broker serves). */
  readonly total: number;
  /** Rows per second since the start. */
  readonly rate: number;
}

export interface RewrapReport {
  readonly rewrapped: number;
  /** Listed for rewrap but already on the target (or deleted) by the time their turn came. */
  readonly skipped: number;
  /** Wrapped keys that did not authenticate (data_loss) or kept changing: left as they are. */
  readonly failed: number;
  readonly seconds: number;
  /** Rows still not on the target when the job ended (failed ones included). */
  readonly remaining: number;
  /** KMS calls retried after `unavailable` (throttling, timeouts). */
  readonly retries: number;
  /** True when `signal` stopped the job early; run it again to resume. */
  readonly stopped: boolean;
}

export interface RewrapRunOptions {
  /** Graceful stop: no new row is started; rows in flight finish (so none is re-done on resume). */
  readonly signal?: AbortSignal;
  /** Writes nothing: plans, and proves the KMS can re-encrypt one row to the target. */
  readonly dryRun?: boolean;
}

export interface RewrapJob {
  plan(targetKeyId: string): Promise<RewrapPlan>;
  /**
   * Re-wraps every user's data key and the pepper under `targetKeyId` (a key ARN or
   * "local:N", as rows record it, never an alias). Rejects `failed_precondition` when a
   * master key is disabled or access is denied, `unavailable` when KMS stays unavailable
   * after retries; either way every row written so far is valid and a new run resumes.
   */
  run(targetKeyId: string, options?: RewrapRunOptions): Promise<RewrapReport>;
}

export interface RetryPolicy {
  /** Attempts per KMS call, the first included. */
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
}

export interface RewrapJobDeps {
  readonly db: Kysely<Database>;
  readonly keyring: Keyring;
  readonly logger: Logger;
  /** Rows read per page. */
  readonly batchSize: number;
  /** KMS calls in flight at once. */
  readonly concurrency: number;
  /** KMS calls per second at most (the account's quota is shared with the live broker). */
  readonly ratePerSecond: number;
  readonly onProgress?: (progress: RewrapProgress) => void;
  /** Backoff for `unavailable` KMS answers, on top of the SDK's own retries. */
  readonly retry?: RetryPolicy;
}

// Up to ~2 minutes of backoff per call: throttling passes, an outage stops the job (resumable).
const DEFAULT_RETRY: RetryPolicy = { attempts: 10, baseDelayMs: 250, maxDelayMs: 20_000 };
// A row whose key changes this often under us (rotations in a loop) is left for a later run.
const MAX_COMPARE_AND_SET_ATTEMPTS = 5;
// Rows created behind the cursor while the job ran (by replicas still on the old key) are
// caught by another pass; passes stop once one makes no progress.
const MAX_PASSES = 3;
// Stored keys are written in batches of rows that finish together (see write-batcher.ts);
// a row waits at most this long for company.
const WRITE_BATCH_MAX = 100;
const WRITE_BATCH_DELAY_MS = 2;

type Outcome = "rewrapped" | "skipped" | "failed";

function positiveInteger(name: string, value: number): void {
  if (!(Number.isInteger(value) && value > 0)) {
    throw new BrokerError("invalid_argument", `${name} must be a positive integer`);
  }
}

function cancelled(signal: AbortSignal): BrokerError {
  return new BrokerError("deadline_exceeded", "rewrap was stopped", { cause: signal.reason });
}

/** Why the whole job stops, worded for the operator; the KMS or database error stays in `cause`. */
function stopError(err: unknown, rewrapped: number): BrokerError {
  const resume = `${rewrapped} row(s) were rewrapped and stay readable; run again to resume`;
  if (isBrokerError(err)) {
    const hint =
      err.code === "failed_precondition"
        ? " (a master key is disabled or access to it is denied: fix that first)"
        : err.code === "unavailable"
          ? " (the key management service stayed unavailable through every retry)"
          : "";
    return new BrokerError(err.code, `rewrap stopped: ${err.message}${hint}; ${resume}`, { cause: err });
  }
  return new BrokerError("internal", `rewrap stopped by an unexpected error; ${resume}`, { cause: err });
}

/**
 * Walks the keys in user_ref order, one shared page at a time, handing rows to the workers.
 * Rows that failed earlier in this run are not offered again.
 */
function createRowSource(
  db: Kysely<Database>,
  options: { targetKeyId: string; batchSize: number; exclude: ReadonlySet<string> },
): () => Promise<WrappedUserKey | undefined> {
  let after: Buffer | undefined;
  let page: WrappedUserKey[] = [];
  let index = 0;
  let exhausted = false;
  let loading: Promise<void> | undefined;

  async function load(): Promise<void> {
    const rows = await findUsersNotOnKey(db, {
      targetKeyId: options.targetKeyId,
      after,
      limit: options.batchSize,
    });
    if (rows.length < options.batchSize) exhausted = true;
    after = rows.at(-1)?.userRef ?? after;
    page = rows.filter((row) => !options.exclude.has(row.userRef.toString("hex")));
    index = 0;
  }

  return async function next() {
    for (;;) {
      const row = page[index];
      if (row !== undefined) {
        index += 1;
        return row;
      }
      if (exhausted) return undefined;
      // One page query at a time, shared by every worker that ran dry.
      loading ??= load().finally(() => {
        loading = undefined;
      });
      await loading;
    }
  };
}

export function createRewrapJob(deps: RewrapJobDeps): RewrapJob {
  const { db, keyring, logger, batchSize, concurrency, ratePerSecond } = deps;
  positiveInteger("batch size", batchSize);
  positiveInteger("concurrency", concurrency);
  if (!(Number.isFinite(ratePerSecond) && ratePerSecond > 0)) {
    throw new BrokerError("invalid_argument", "rate must be a positive number of calls per second");
  }
  const retry = deps.retry ?? DEFAULT_RETRY;

  async function plan(targetKeyId: string): Promise<RewrapPlan> {
    const [byKey, pepper] = await Promise.all([
      countUsersByMasterKey(db, targetKeyId),
      findBrokerState(db, PEPPER_STATE),
    ]);
    let users = 0;
    for (const n of byKey.values()) users += n;
    return {
      users,
      pepper: pepper !== undefined && pepper.masterKeyId !== targetKeyId,
      byKey: Object.fromEntries(byKey),
    };
  }

  async function run(targetKeyId: string, options: RewrapRunOptions = {}): Promise<RewrapReport> {
    const { signal } = options;
    const startedAt = performance.now();
    const limiter: RateLimiter = createRateLimiter({ ratePerSecond, burst: Math.min(concurrency, 100) });
    const counts = { rewrapped: 0, skipped: 0, failed: 0 };
    let retries = 0;
    // Rows that failed are remembered (in memory only) so a later pass does not retry them.
    const failedUsers = new Set<string>();
    let fatal: unknown;
    const writes = createWriteBatcher({
      maxBatch: Math.min(WRITE_BATCH_MAX, Math.ceil(concurrency / 2)),
      maxDelayMs: WRITE_BATCH_DELAY_MS,
      writeBatch: async (changes: readonly UserKeyChange[]) => {
        const written = await compareAndSetUserKeys(db, changes);
        return changes.map((change) => written.has(change.userRef.toString("hex")));
      },
    });

    const initial = await plan(targetKeyId);
    const total = initial.users + (initial.pepper ? 1 : 0);
    const elapsed = () => (performance.now() - startedAt) / 1000;
    const done = () => counts.rewrapped + counts.skipped + counts.failed;
    const stopping = () => fatal !== undefined || signal?.aborted === true;

    const progress = (): void => {
      const seconds = elapsed();
      deps.onProgress?.({ done: done(), total, rate: seconds > 0 ? done() / seconds : 0 });
    };

    /** One KMS call through the rate limit, retried with backoff while KMS is `unavailable`. */
    async function callKms<T>(call: () => Promise<T>): Promise<T> {
      for (let attempt = 1; ; attempt += 1) {
        await limiter.take(signal);
        try {
          const result = await call();
          limiter.speedUp();
          return result;
        } catch (err) {
          if (!(isBrokerError(err) && err.code === "unavailable") || attempt >= retry.attempts) throw err;
          limiter.slowDown();
          retries += 1;
          // Full jitter: concurrent workers throttled together must not retry together.
          const delayMs = Math.random() * Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** (attempt - 1));
          logger.debug(
            { attempt, delayMs: Math.round(delayMs) },
            "KMS unavailable during rewrap; backing off",
          );
          try {
            await sleepFor(delayMs, undefined, signal === undefined ? {} : { signal });
          } catch (sleepErr) {
            throw signal?.aborted ? cancelled(signal) : sleepErr;
          }
        }
      }
    }

    async function reEncrypt(wrapped: Buffer, context: EncryptionContext): Promise<WrappedKey> {
      // Not given `signal`: a call in flight finishes and its row is stored, so a stopped
      // job never leaves a row re-encrypted but not written (the SDK's timeouts bound it).
      const rewrapped = await callKms(() => keyring.reEncrypt(wrapped, context, targetKeyId));
      if (rewrapped.keyId !== targetKeyId) {
        // Storing it under another id would make the row look stale forever (e.g. an alias given).
        throw new BrokerError(
          "failed_precondition",
          `the key management service wrapped under ${rewrapped.keyId}, not ${targetKeyId}; pass the key's ARN`,
        );
      }
      return rewrapped;
    }

    /** Moves one row to the target with compare-and-set; a concurrent change is re-read, never overwritten. */
    async function rewrapRow(
      first: { wrapped: Buffer; masterKeyId: string },
      context: EncryptionContext,
      store: (expected: Buffer, rewrapped: WrappedKey) => Promise<boolean>,
      reread: () => Promise<{ wrapped: Buffer; masterKeyId: string } | undefined>,
    ): Promise<Outcome> {
      let current: { wrapped: Buffer; masterKeyId: string } | undefined = first;
      for (let attempt = 0; attempt < MAX_COMPARE_AND_SET_ATTEMPTS; attempt += 1) {
        if (current === undefined || current.masterKeyId === targetKeyId) return "skipped";
        let rewrapped: WrappedKey;
        try {
          rewrapped = await reEncrypt(current.wrapped, context);
        } catch (err) {
          if (!(isBrokerError(err) && err.code === "data_loss")) throw err;
          // Tampered or corrupted: nothing can rewrap it. Leave it for an operator (I6 fails closed).
          logger.error({ code: err.code }, "a stored wrapped key did not authenticate; left unchanged");
          return "failed";
        }
        if (await store(current.wrapped, rewrapped)) return "rewrapped";
        current = await reread();
      }
      logger.warn("a wrapped key kept changing during rewrap; left for the next run");
      return "failed";
    }

    function rewrapUser(row: WrappedUserKey): Promise<Outcome> {
      return rewrapRow(
        { wrapped: row.wrappedDataKey, masterKeyId: row.masterKeyId },
        userKeyContext(row.userRef),
        (expected, rewrapped) =>
          writes.write({
            userRef: row.userRef,
            expected,
            wrappedDataKey: rewrapped.wrapped,
            masterKeyId: rewrapped.keyId,
          }),
        async () => {
          const now = await findWrappedUserKey(db, row.userRef);
          return now && { wrapped: now.wrappedDataKey, masterKeyId: now.masterKeyId };
        },
      );
    }

    async function readPepper(): Promise<{ wrapped: Buffer; masterKeyId: string } | undefined> {
      const state = await findBrokerState(db, PEPPER_STATE);
      return state && { wrapped: asBuffer(state.wrapped), masterKeyId: state.masterKeyId };
    }

    async function rewrapPepper(): Promise<Outcome | undefined> {
      const pepper = await readPepper();
      if (pepper === undefined || pepper.masterKeyId === targetKeyId) return undefined;
      return rewrapRow(
        pepper,
        PEPPER_CONTEXT,
        (expected, rewrapped) =>
          compareAndSetBrokerState(db, {
            name: PEPPER_STATE,
            expected,
            wrapped: rewrapped.wrapped,
            masterKeyId: rewrapped.keyId,
          }),
        readPepper,
      );
    }

    function settle(outcome: Outcome, row?: WrappedUserKey): void {
      counts[outcome] += 1;
      if (outcome === "failed" && row !== undefined) failedUsers.add(row.userRef.toString("hex"));
      progress();
    }

    async function worker(next: () => Promise<WrappedUserKey | undefined>): Promise<void> {
      while (!stopping()) {
        let row: WrappedUserKey | undefined;
        try {
          row = await next();
          if (row === undefined || stopping()) return;
          settle(await rewrapUser(row), row);
        } catch (err) {
          // A wait cut short by `signal` is a graceful stop, not a failure.
          if (!(signal?.aborted && isBrokerError(err) && err.code === "deadline_exceeded")) fatal ??= err;
          return;
        }
      }
    }

    async function remaining(): Promise<number> {
      const current = await plan(targetKeyId);
      return current.users + (current.pepper ? 1 : 0);
    }

    async function probe(): Promise<void> {
      // One re-encryption, discarded: proves the KMS lets us read the source and use the target.
      const pepper = await readPepper();
      if (pepper !== undefined && pepper.masterKeyId !== targetKeyId) {
        await reEncrypt(pepper.wrapped, PEPPER_CONTEXT);
        return;
      }
      const [user] = await findUsersNotOnKey(db, { targetKeyId, after: undefined, limit: 1 });
      if (user !== undefined) await reEncrypt(user.wrappedDataKey, userKeyContext(user.userRef));
    }

    logger.info(
      { targetKeyId, users: initial.users, pepper: initial.pepper, batchSize, concurrency, ratePerSecond },
      options.dryRun ? "rewrap dry run" : "rewrap started",
    );
    if (options.dryRun) {
      try {
        await probe();
      } catch (err) {
        throw stopError(err, 0);
      }
      return { ...counts, seconds: elapsed(), remaining: total, retries, stopped: false };
    }

    try {
      // The pepper first: a target that is disabled or denied stops the job before any user row.
      const pepperOutcome = await rewrapPepper();
      if (pepperOutcome !== undefined) settle(pepperOutcome);
    } catch (err) {
      if (!(signal?.aborted && isBrokerError(err) && err.code === "deadline_exceeded")) fatal = err;
    }

    let left = total;
    for (let pass = 1; pass <= MAX_PASSES && !stopping(); pass += 1) {
      const settledBefore = counts.rewrapped;
      const next = createRowSource(db, { targetKeyId, batchSize, exclude: failedUsers });
      await Promise.all(Array.from({ length: concurrency }, () => worker(next)));
      if (stopping()) break;
      left = await remaining();
      if (left <= failedUsers.size || counts.rewrapped === settledBefore) break;
      logger.info({ pass, remaining: left }, "rows appeared behind the rewrap cursor; another pass");
    }
    if (stopping()) left = await remaining().catch(() => left);

    const report: RewrapReport = {
      ...counts,
      seconds: elapsed(),
      remaining: left,
      retries,
      stopped: fatal === undefined && signal?.aborted === true,
    };
    progress();
    if (fatal !== undefined) {
      const err = stopError(fatal, counts.rewrapped);
      // The message only: a KMS SDK error carries the whole HTTP exchange, which has no place in logs.
      logger.error({ code: err.code, reason: err.message, ...report }, "rewrap stopped");
      throw err;
    }
    logger.info(report, report.stopped ? "rewrap stopped on request" : "rewrap finished");
    return report;
  }

  return { plan, run };
}
