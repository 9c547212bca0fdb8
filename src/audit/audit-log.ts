import { BrokerError } from "../errors.js";
import {
  type AuditChainHead,
  appendAuditRowsIfHead,
  lockAuditChainHead,
  type NewAuditRow,
} from "../store/audit.repository.js";
import type { PreparedRunner } from "../store/prepared.js";
import {
  canNameSecret,
  forUseId,
  type SecretForUse,
  type SecretForUseKey,
} from "../store/secrets.repository.js";
import { chainHash, GENESIS_HASH } from "./audit-chain.js";
import { type AuditEntry, toAuditEntry } from "./audit-entry.js";
import type { AuditEvent } from "./audit-event.js";

/** Appends events to the hash-chained audit trail (SPEC I8). */
export interface AuditLog {
  /**
   * Resolves once the event's row is committed; rejects `unavailable` if it could not be written.
   * A `deferred` event starts no batch of its own: it rides with the next one, or waits at most
   * `deferredMaxDelayMs`. For rows no caller waits on (the outcome of something already done).
   */
  record(event: AuditEvent, options?: AuditRecordOptions): Promise<void>;
  /**
   * Like `record`, and the statement that commits the row also reads the sealed secret `read`
   * names (never decrypted here): resolved with it once the row is committed, undefined if there
   * is no such secret OR it is another user's (I4). The proxied call's one round trip (issue 17
   * item 2): its `started` row, its caller key's check and its secret's read.
   */
  recordReading(
    event: AuditEvent,
    read: SecretForUseKey,
    options?: AuditRecordOptions,
  ): Promise<SecretForUse | undefined>;
  /** Waits until every event recorded before the call is committed or has failed. Never rejects. */
  flush(): Promise<void>;
  /** Flushes, then refuses further events. Does not close the database. */
  close(): Promise<void>;
}

export interface AuditRecordOptions {
  readonly deferred?: boolean;
  /**
   * The row commits only if the event's caller key is still live (not revoked, suspended or
   * expired), checked by the statement that writes it; else the record rejects UNAUTHENTICATED
   * and nothing of it is written. A sensitive call's `started` row is its caller key's check
   * (catalogue B20): no separate read per call (issue 17 item 2).
   */
  readonly requireLiveCallerKey?: boolean;
}

/** How a committed batch reached the chain head (see `onBatch`). */
export type AuditBatchPath = "optimistic" | "head_moved" | "locked";

export interface AuditLogDeps {
  readonly prepared: PreparedRunner;
  readonly now?: () => Date;
  /** How long the first event of a batch waits for company; default 2 ms. */
  readonly batchMaxDelayMs?: number;
  /** How long a deferred event waits for a batch to ride with; default 10 ms. */
  readonly deferredMaxDelayMs?: number;
  /** Events per transaction; default 256. */
  readonly batchMaxSize?: number;
  /** Told about every failed batch (with the real cause), e.g. to log it and fail readiness. */
  readonly onWriteFailure?: (err: unknown) => void;
  /**
   * Told about each committed batch: how it reached the head (one optimistic statement; the
   * optimistic try found it moved by another writer, then the locked path; or locked from the
   * start), its rows and its time. The chain head's contention between replicas and workers
   * (issue 17 item 3) shows as `head_moved`. Must not throw or block.
   */
  readonly onBatch?: (batch: { path: AuditBatchPath; rows: number; durationMs: number }) => void;
  /** Told the chain's last seq after each committed batch; must not throw or block (M1 checkpoints). */
  readonly onAppended?: (lastSeq: number) => void;
}

interface Pending {
  readonly entry: AuditEntry;
  /** The caller key that must be live for this row to commit. */
  readonly liveKey: string | undefined;
  /** The sealed secret the statement also reads for this event's call, if any. */
  readonly read: SecretForUseKey | undefined;
  readonly resolve: (read: SecretForUse | undefined) => void;
  readonly reject: (err: BrokerError) => void;
  done: boolean;
}

const DEFAULT_BATCH_MAX_DELAY_MS = 2;
const DEFAULT_DEFERRED_MAX_DELAY_MS = 10;
const DEFAULT_BATCH_MAX_SIZE = 256;

function unavailable(cause?: unknown): BrokerError {
  return new BrokerError(
    "unavailable",
    "audit trail unavailable",
    cause === undefined ? undefined : { cause },
  );
}

/** The refusal of a call whose caller key turned out revoked, suspended or expired. */
export function deadCallerKey(id: string): BrokerError {
  return new BrokerError("unauthenticated", "invalid caller key", {
    cause: new Error(`caller key ${id} is no longer live`),
    reason: "caller_key_invalid",
  });
}

/** The rows for `entries`, chained on from `head`, and the head they leave behind. */
function chainOn(
  head: AuditChainHead,
  entries: readonly AuditEntry[],
): { rows: NewAuditRow[]; head: AuditChainHead } {
  let seq = head.lastSeq;
  let prevHash: Uint8Array = head.lastHash;
  const rows = entries.map((entry): NewAuditRow => {
    seq += 1;
    const hash = chainHash(prevHash, seq, entry);
    const row = { ...entry, seq, prevHash, hash };
    prevHash = hash;
    return row;
  });
  return { rows, head: { lastSeq: seq, lastHash: Buffer.from(prevHash) } };
}

/**
 * The audit writer. The chain head is the one point where every replica serialises, so events
 * are grouped: one batch per append and at most one batch in flight per process. Events that
 * arrive while a batch commits form the next one, so batches grow with load.
 *
 * An append is optimistic: one statement that moves the head from where this process last left
 * it and inserts the batch, committed on its own (one round trip). Only when that finds the head
 * elsewhere (another replica appended, or this is the process's first batch) does it take the
 * head's row lock, re-chain from the locked head and append in a transaction. A batch commits
 * or fails whole; each caller learns which, so no operation proceeds unaudited.
 */
export function createAuditLog(deps: AuditLogDeps): AuditLog {
  const now = deps.now ?? (() => new Date());
  const maxDelayMs = deps.batchMaxDelayMs ?? DEFAULT_BATCH_MAX_DELAY_MS;
  const deferredDelayMs = deps.deferredMaxDelayMs ?? DEFAULT_DEFERRED_MAX_DELAY_MS;
  const maxSize = deps.batchMaxSize ?? DEFAULT_BATCH_MAX_SIZE;
  if (!(maxDelayMs >= 0) || !(deferredDelayMs >= 0) || !Number.isSafeInteger(maxSize) || maxSize < 1) {
    throw new BrokerError("internal", "audit batch settings must be non-negative and a positive size");
  }

  const queue: Pending[] = [];
  let timer: ReturnType<typeof setTimeout> | undefined;
  /** When `timer` fires (epoch ms); an event that must go sooner replaces it. */
  let timerDue = Number.POSITIVE_INFINITY;
  let soon = false;
  let draining: Promise<void> | undefined;
  let closed = false;
  // Where this process last saw the head; undefined until the first append, and after any
  // failure (a lost commit acknowledgement leaves the real head unknown).
  let knownHead: AuditChainHead | undefined;

  function reportFailure(err: unknown): void {
    try {
      deps.onWriteFailure?.(err);
    } catch {
      // A broken failure hook must not turn a clean `unavailable` into something else.
    }
  }

  type Appended = {
    path: AuditBatchPath;
    rows: number;
    head: AuditChainHead | undefined;
    dead: Set<string>;
    secrets: ReadonlyMap<string, SecretForUse>;
  };

  /**
   * Appends the batch; resolves to the caller keys found dead (their events were not written) and
   * the secrets the written events' calls asked for.
   */
  async function append(batch: readonly Pending[]): Promise<Appended> {
    const dead = new Set<string>();
    // A dead key's events leave the batch and the rest is re-chained: at most one retry per key.
    for (;;) {
      const pending = batch.filter((p) => p.liveKey === undefined || !dead.has(p.liveKey));
      const entries = pending.map((p) => p.entry);
      const liveKeys = [...new Set(pending.flatMap((p) => (p.liveKey === undefined ? [] : [p.liveKey])))];
      // Nothing left to write: the head stays where it was.
      if (entries.length === 0)
        return { path: "optimistic", rows: 0, head: knownHead, dead, secrets: new Map() };
      const outcome = await appendOnce(entries, liveKeys, readsOf(pending));
      if (outcome.kind === "appended") return { ...outcome, rows: entries.length, dead };
      for (const id of outcome.ids) dead.add(id);
    }
  }

  /** Each distinct (user, secret) pair the events' calls read, once. */
  function readsOf(pending: readonly Pending[]): SecretForUseKey[] {
    const reads = new Map<string, SecretForUseKey>();
    for (const p of pending) {
      if (p.read !== undefined) reads.set(forUseId(p.read.userRef, p.read.secretId), p.read);
    }
    return [...reads.values()];
  }

  async function appendOnce(
    entries: readonly AuditEntry[],
    liveKeys: readonly string[],
    reads: readonly SecretForUseKey[],
  ): Promise<
    | {
        kind: "appended";
        path: AuditBatchPath;
        head: AuditChainHead;
        secrets: ReadonlyMap<string, SecretForUse>;
      }
    | { kind: "dead"; ids: readonly string[] }
  > {
    let path: AuditBatchPath = "locked";
    if (knownHead !== undefined) {
      const optimistic = chainOn(knownHead, entries);
      const result = await appendAuditRowsIfHead(deps.prepared, knownHead, optimistic.rows, liveKeys, reads);
      if (result.kind === "appended")
        return { kind: "appended", path: "optimistic", head: optimistic.head, secrets: result.secrets };
      if (result.kind === "dead_caller_keys") return { kind: "dead", ids: result.ids };
      path = "head_moved";
    }
    return deps.prepared.transaction(async (tx) => {
      const locked = await lockAuditChainHead(tx, GENESIS_HASH);
      const chained = chainOn(locked, entries);
      const result = await appendAuditRowsIfHead(tx, locked, chained.rows, liveKeys, reads);
      if (result.kind === "dead_caller_keys") return { kind: "dead" as const, ids: result.ids };
      if (result.kind === "head_moved")
        throw new BrokerError("internal", "audit chain head moved while locked");
      return { kind: "appended" as const, path, head: chained.head, secrets: result.secrets };
    });
  }

  async function appendBatch(batch: readonly Pending[]): Promise<void> {
    let dead: Set<string>;
    let secrets: ReadonlyMap<string, SecretForUse>;
    const startedAt = performance.now();
    try {
      const appended = await append(batch);
      knownHead = appended.head;
      dead = appended.dead;
      secrets = appended.secrets;
      if (appended.rows > 0) {
        const { path, rows } = appended;
        tell(() => deps.onBatch?.({ path, rows, durationMs: performance.now() - startedAt }));
      }
    } catch (err) {
      knownHead = undefined;
      reportFailure(err);
      for (const pending of batch) {
        pending.done = true;
        pending.reject(unavailable(err));
      }
      return;
    }
    for (const pending of batch) {
      pending.done = true;
      if (pending.liveKey !== undefined && dead.has(pending.liveKey))
        pending.reject(deadCallerKey(pending.liveKey));
      else
        pending.resolve(
          pending.read === undefined
            ? undefined
            : secrets.get(forUseId(pending.read.userRef, pending.read.secretId)),
        );
    }
    if (knownHead !== undefined) {
      const { lastSeq } = knownHead;
      tell(() => deps.onAppended?.(lastSeq));
    }
  }

  function tell(hook: () => void): void {
    try {
      hook();
    } catch {
      // The rows are committed; a broken hook must not fail the batch that wrote them.
    }
  }

  async function drain(): Promise<void> {
    while (queue.length > 0) await appendBatch(queue.splice(0, maxSize));
  }

  function startDrain(): void {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
      timerDue = Number.POSITIVE_INFINITY;
    }
    if (draining !== undefined || queue.length === 0) return;
    draining = drain().finally(() => {
      draining = undefined;
      // Events queued between the loop's last check and here would otherwise wait for the next record.
      if (queue.length > 0) schedule(false);
    });
  }

  // setTimeout(0) waits ~1 ms; setImmediate still groups every event recorded in the same tick.
  function startSoon(): void {
    if (soon) return;
    soon = true;
    setImmediate(() => {
      soon = false;
      startDrain();
    });
  }

  function startWithin(delayMs: number): void {
    if (delayMs === 0) {
      startSoon();
      return;
    }
    const due = Date.now() + delayMs;
    if (due >= timerDue) return;
    if (timer !== undefined) clearTimeout(timer);
    timerDue = due;
    timer = setTimeout(startDrain, delayMs);
  }

  function schedule(deferred: boolean): void {
    // A running drain picks new events up as soon as its batch commits.
    if (draining !== undefined) return;
    if (queue.length >= maxSize) startDrain();
    else startWithin(deferred ? deferredDelayMs : maxDelayMs);
  }

  async function flush(): Promise<void> {
    const last = queue.at(-1);
    if (last === undefined) {
      await draining;
      return;
    }
    // Batches settle in queue order, so the last queued event settles last.
    while (!last.done) {
      startDrain();
      await draining;
    }
  }

  function enqueue(
    event: AuditEvent,
    options: AuditRecordOptions | undefined,
    read: SecretForUseKey | undefined,
  ): Promise<SecretForUse | undefined> {
    if (closed) return Promise.reject(unavailable());
    let entry: AuditEntry;
    try {
      entry = toAuditEntry(event, now());
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<SecretForUse | undefined>((resolve, reject) => {
      const liveKey = options?.requireLiveCallerKey === true ? (event.callerKeyId ?? undefined) : undefined;
      if (options?.requireLiveCallerKey === true && liveKey === undefined) {
        reject(new BrokerError("internal", "a row that must check its caller key names none"));
        return;
      }
      queue.push({ entry, liveKey, read, resolve, reject, done: false });
      schedule(options?.deferred === true);
    });
  }

  return {
    async record(event, options) {
      await enqueue(event, options, undefined);
    },

    // Not a uuid names no secret: its row is still written, and nothing is read for it (a bad id
    // must not fail the statement it shares with other calls).
    recordReading: (event, read, options) =>
      enqueue(event, options, canNameSecret(read.secretId) ? read : undefined),

    flush,

    async close() {
      closed = true;
      await flush();
    },
  };
}
