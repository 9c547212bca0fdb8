import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import { BrokerError, isBrokerError } from "../errors.js";
import type { Keyring } from "../keys/keyring.js";
import { PEPPER_STATE } from "../keys/pepper.js";
import type { Logger } from "../log/logger.js";
import { findBrokerState } from "../store/broker-state.repository.js";
import { countOAuthAppsByMasterKey, findOAuthAppsNotOnKey } from "../store/oauth-apps.repository.js";
import { countUsersByMasterKey, type WrappedUserKey } from "../store/rewrap.repository.js";
import {
  deleteFinishedRewrapRanges,
  deleteRewrapRateWindows,
  ensureRewrapRanges,
  reopenRewrapRanges,
} from "../store/rewrap-ranges.repository.js";
import type { Database } from "../store/schema.js";
import { createKmsRetry, DEFAULT_RETRY, type RetryPolicy } from "./kms-retry.js";
import { createLeasedRowSource, type LeasedRowSource, rewrapRangeStarts } from "./leased-row-source.js";
import { createRateLimiter, type RateLimiter } from "./rate-limiter.js";
import { createRewrapRowMover, type RowOutcome } from "./rewrap-row-mover.js";
import { createSharedRateWindow, withSharedWindow } from "./shared-rate-window.js";

/**
 * The rewrap job: plans, moves the pepper and the OAuth apps' keys, then drives workers that take
 * users' rows from leased user_ref ranges (leased-row-source.ts) and move them
 * (rewrap-row-mover.ts) through the KMS rate limit and backoff (kms-retry.ts), reporting progress;
 * a stopped or failed run is resumed by running again.
 * Several jobs (processes) on the same target share the work through the range leases and the
 * rate through the database's rate windows (shared-rate-window.ts): run more to go faster.
 */

/** What a rewrap to a target master key has left to do. */
export interface RewrapPlan {
  /** Users whose data key is not wrapped under the target. */
  readonly users: number;
  /** Whether the sealed pepper is not wrapped under the target. */
  readonly pepper: boolean;
  /** OAuth apps (client secrets, one row per provider) whose data key is not wrapped under the target. */
  readonly oauthApps: number;
  /** Those users per master key id that wraps them now. */
  readonly byKey: Record<string, number>;
}

export interface RewrapProgress {
  /** Rows settled so far (rewrapped, skipped or failed), the pepper and the OAuth apps included. */
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
   * Re-wraps every user's data key, the pepper and every OAuth app's data key under `targetKeyId`
   * (a key ARN or "local:N", as rows record it, never an alias). Rejects `failed_precondition`
   * when a master key is disabled or access is denied, `unavailable` when KMS stays unavailable
   * after retries; either way every row written so far is valid and a new run resumes.
   */
  run(targetKeyId: string, options?: RewrapRunOptions): Promise<RewrapReport>;
}

export interface RewrapJobDeps {
  readonly db: Kysely<Database>;
  readonly keyring: Keyring;
  readonly logger: Logger;
  /** Rows read per page. */
  readonly batchSize: number;
  /** KMS calls in flight at once. */
  readonly concurrency: number;
  /**
   * KMS calls per second at most, in total over every job running on the same target (the
   * account's quota is shared with the live broker).
   */
  readonly ratePerSecond: number;
  /** This job's name in the range leases; default: pid and a random suffix. */
  readonly owner?: string;
  /** A range lease lapses this long after its last renewal (a crashed worker's range is then free). */
  readonly leaseTtlMs?: number;
  /** Ranges the user_ref space is cut into (only when the target's ranges are first created). */
  readonly ranges?: number;
  readonly onProgress?: (progress: RewrapProgress) => void;
  /** Backoff for `unavailable` KMS answers, on top of the SDK's own retries. */
  readonly retry?: RetryPolicy;
}

// Rows created behind the cursor while the job ran (by replicas still on the old key) are
// caught by another pass; passes stop once one makes no progress.
const MAX_PASSES = 3;
const DEFAULT_LEASE_TTL_MS = 30_000;
const DEFAULT_RANGES = 64;

function positiveInteger(name: string, value: number): void {
  if (!(Number.isInteger(value) && value > 0)) {
    throw new BrokerError("invalid_argument", `${name} must be a positive integer`);
  }
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

export function createRewrapJob(deps: RewrapJobDeps): RewrapJob {
  const { db, keyring, logger, batchSize, concurrency, ratePerSecond } = deps;
  positiveInteger("batch size", batchSize);
  positiveInteger("concurrency", concurrency);
  if (!(Number.isFinite(ratePerSecond) && ratePerSecond > 0)) {
    throw new BrokerError("invalid_argument", "rate must be a positive number of calls per second");
  }
  const retry = deps.retry ?? DEFAULT_RETRY;
  const owner = deps.owner ?? `pid ${process.pid} ${randomUUID().slice(0, 8)}`;
  const leaseTtlMs = deps.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS;
  const rateBucket = (targetKeyId: string) => `rewrap:${targetKeyId}`;

  async function plan(targetKeyId: string): Promise<RewrapPlan> {
    const [byKey, pepper, apps] = await Promise.all([
      countUsersByMasterKey(db, targetKeyId),
      findBrokerState(db, PEPPER_STATE),
      countOAuthAppsByMasterKey(db, targetKeyId),
    ]);
    const sum = (counts: Map<string, number>) => [...counts.values()].reduce((a, n) => a + n, 0);
    return {
      users: sum(byKey),
      pepper: pepper !== undefined && pepper.masterKeyId !== targetKeyId,
      oauthApps: sum(apps),
      byKey: Object.fromEntries(byKey),
    };
  }

  async function run(targetKeyId: string, options: RewrapRunOptions = {}): Promise<RewrapReport> {
    const { signal } = options;
    const startedAt = performance.now();
    const limiter: RateLimiter = withSharedWindow(
      createRateLimiter({ ratePerSecond, burst: Math.min(concurrency, 100) }),
      createSharedRateWindow({ db, bucket: rateBucket(targetKeyId), ratePerSecond }),
    );
    const counts = { rewrapped: 0, skipped: 0, failed: 0 };
    // Rows that failed are remembered (in memory only) so a later pass does not retry them.
    const failedUsers = new Set<string>();
    // The pepper and OAuth apps that failed: still counted as remaining, not worth another pass.
    let failedOthers = 0;
    let fatal: unknown;
    const kms = createKmsRetry({ limiter, retry, logger, signal });
    const mover = createRewrapRowMover({ db, keyring, logger, kms, targetKeyId, concurrency });

    const initial = await plan(targetKeyId);
    const rowsLeft = (p: RewrapPlan) => p.users + (p.pepper ? 1 : 0) + p.oauthApps;
    const total = rowsLeft(initial);
    const elapsed = () => (performance.now() - startedAt) / 1000;
    const done = () => counts.rewrapped + counts.skipped + counts.failed;
    const stopping = () => fatal !== undefined || signal?.aborted === true;

    const progress = (): void => {
      const seconds = elapsed();
      deps.onProgress?.({ done: done(), total, rate: seconds > 0 ? done() / seconds : 0 });
    };

    function settle(outcome: RowOutcome, row?: WrappedUserKey): void {
      counts[outcome] += 1;
      if (outcome === "failed") {
        if (row === undefined) failedOthers += 1;
        else failedUsers.add(row.userRef.toString("hex"));
      }
      progress();
    }

    async function worker(rows: Pick<LeasedRowSource, "next" | "settled">): Promise<void> {
      while (!stopping()) {
        let row: WrappedUserKey | undefined;
        try {
          row = await rows.next();
          if (row === undefined || stopping()) return;
          settle(await mover.rewrapUser(row), row);
        } catch (err) {
          // A wait cut short by `signal` is a graceful stop, not a failure.
          if (!(signal?.aborted && isBrokerError(err) && err.code === "deadline_exceeded")) fatal ??= err;
          return;
        } finally {
          if (row !== undefined) rows.settled(row);
        }
      }
    }

    async function remaining(): Promise<number> {
      return rowsLeft(await plan(targetKeyId));
    }

    logger.info(
      {
        targetKeyId,
        users: initial.users,
        pepper: initial.pepper,
        oauthApps: initial.oauthApps,
        batchSize,
        concurrency,
        ratePerSecond,
      },
      options.dryRun ? "rewrap dry run" : "rewrap started",
    );
    if (options.dryRun) {
      try {
        await mover.probe();
      } catch (err) {
        throw stopError(err, 0);
      }
      return { ...counts, seconds: elapsed(), remaining: total, retries: kms.retries(), stopped: false };
    }

    try {
      // The pepper first: a target that is disabled or denied stops the job before any user row.
      const pepperOutcome = await mover.rewrapPepper();
      if (pepperOutcome !== undefined) settle(pepperOutcome);
    } catch (err) {
      if (!(signal?.aborted && isBrokerError(err) && err.code === "deadline_exceeded")) fatal = err;
    }
    try {
      // Then the OAuth apps' client secrets (a handful of rows, outside the users' ranges): under
      // the old key they would no longer open once it is disabled.
      for (const app of stopping() ? [] : await findOAuthAppsNotOnKey(db, targetKeyId)) {
        if (stopping()) break;
        settle(await mover.rewrapOAuthApp(app));
      }
    } catch (err) {
      if (!(signal?.aborted && isBrokerError(err) && err.code === "deadline_exceeded")) fatal ??= err;
    }

    let left = total;
    try {
      if (!stopping())
        await ensureRewrapRanges(db, targetKeyId, rewrapRangeStarts(deps.ranges ?? DEFAULT_RANGES));
    } catch (err) {
      fatal ??= err;
    }
    for (let pass = 1; pass <= MAX_PASSES && !stopping(); pass += 1) {
      const settledBefore = counts.rewrapped;
      const rows = createLeasedRowSource({
        db,
        logger,
        targetKeyId,
        owner,
        leaseTtlMs,
        batchSize,
        exclude: failedUsers,
        stopping,
        signal,
      });
      await Promise.all(Array.from({ length: concurrency }, () => worker(rows)));
      // A stopped or failed job hands its range back at once (a crashed one by its lease expiring).
      await rows.release().catch((err: unknown) => logger.warn({ err }, "could not release a rewrap range"));
      if (stopping()) break;
      left = await remaining();
      if (left <= failedUsers.size + failedOthers) break;
      // Rows behind the walk (made by replicas still on the old key, or left by a crashed worker
      // after its range was marked done): every range again, unless this pass moved nothing.
      if (counts.rewrapped === settledBefore && pass > 1) break;
      await reopenRewrapRanges(db, targetKeyId);
      logger.info({ pass, remaining: left }, "rows appeared behind the rewrap ranges; another pass");
    }
    if (stopping()) left = await remaining().catch(() => left);
    else {
      await deleteRewrapRateWindows(db, rateBucket(targetKeyId), Date.now() - 60_000).catch(() => undefined);
      // The target's 64 range rows go once every range is done; they only ever serve a resume.
      // Not the other choice (deleting older targets' rows when a new target starts): a run to B
      // stopped half-way, then one to C, would lose B's progress, and a job still walking B (an
      // operator's second process) would have its leases pulled from under it. Here nothing
      // unfinished is touched: a stopped run hands its ranges back undone, so they stay, and a
      // job between passes that reopened them keeps them (deleteFinishedRewrapRanges). A worker
      // of this run starting after the deletion only recreates the rows and walks past rows
      // already on the target. Best effort: left behind, they are 64 small rows.
      await deleteFinishedRewrapRanges(db, targetKeyId).catch((err: unknown) =>
        logger.warn({ err }, "could not delete the finished rewrap ranges"),
      );
    }

    const report: RewrapReport = {
      ...counts,
      seconds: elapsed(),
      remaining: left,
      retries: kms.retries(),
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
