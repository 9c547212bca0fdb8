import type { Kysely } from "kysely";
import type { MacKey } from "../keys/mac-key.js";
import type { Logger } from "../log/logger.js";
import { readAuditChainHead } from "../store/audit.repository.js";
import { insertAuditCheckpoint, type StoredAuditCheckpoint } from "../store/audit-checkpoints.repository.js";
import type { Database } from "../store/schema.js";
import { checkpointMessage } from "./audit-checkpoint.js";

export interface AuditCheckpointerDeps {
  readonly db: Kysely<Database>;
  readonly macKey: Pick<MacKey, "keyId" | "generateMac">;
  readonly logger: Pick<Logger, "info" | "warn">;
  /** A checkpoint at least this often while the chain grows. */
  readonly intervalMs: number;
  /** ...and sooner, once this many rows were appended since the last one this process saw. */
  readonly rows: number;
  /** Write each checkpoint as a log line too, for storage off this database. */
  readonly exportToLog: boolean;
  /** Bounds one checkpoint's MAC call (KMS); the timer never waits longer. */
  readonly timeoutMs?: number;
  readonly now?: () => Date;
}

/** Signs the chain head in the background (M1). Nothing on a call's path waits for it. */
export interface AuditCheckpointer {
  /** Tells it the head moved (the audit log, after each committed batch); may start a checkpoint. */
  noteAppended(lastSeq: number): void;
  /**
   * Signs and stores the head as it is now (after any checkpoint in flight), unless already
   * covered. Never rejects (failures are logged).
   */
  checkpoint(): Promise<StoredAuditCheckpoint | undefined>;
  /** Stops the timer, waits for a checkpoint in flight, then signs what the log flushed last. */
  close(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 5_000;

export function createAuditCheckpointer(deps: AuditCheckpointerDeps): AuditCheckpointer {
  const { db, macKey, logger } = deps;
  const now = deps.now ?? (() => new Date());
  let coveredSeq = 0;
  let noticedSeq = 0;
  let inFlight: Promise<StoredAuditCheckpoint | undefined> | undefined;
  let closed = false;

  async function signHead(): Promise<StoredAuditCheckpoint | undefined> {
    const head = await readAuditChainHead(db);
    if (head === undefined || head.lastSeq === 0 || head.lastSeq <= coveredSeq) return undefined;
    const claim = { seq: head.lastSeq, chainHash: head.lastHash, signedAt: now() };
    const mac = await macKey.generateMac(checkpointMessage(claim), {
      signal: AbortSignal.timeout(deps.timeoutMs ?? DEFAULT_TIMEOUT_MS),
    });
    const checkpoint: StoredAuditCheckpoint = { ...claim, keyId: macKey.keyId, mac };
    await insertAuditCheckpoint(db, checkpoint);
    coveredSeq = Math.max(coveredSeq, head.lastSeq);
    if (deps.exportToLog) {
      // Not secret: a MAC over public values. Kept off-box, it shows a checkpoint row deleted later.
      logger.info(
        {
          auditCheckpoint: {
            seq: checkpoint.seq,
            chainHash: checkpoint.chainHash.toString("hex"),
            signedAt: checkpoint.signedAt.toISOString(),
            keyId: checkpoint.keyId,
            mac: checkpoint.mac.toString("hex"),
          },
        },
        "audit checkpoint",
      );
    }
    return checkpoint;
  }

  // One at a time: a slow KMS must not pile up calls, the next tick covers what this one missed.
  function startOrJoin(): Promise<StoredAuditCheckpoint | undefined> {
    inFlight ??= signHead()
      .catch((err: unknown) => {
        logger.warn({ err }, "audit checkpoint failed; the next one will cover these rows");
        return undefined;
      })
      .finally(() => {
        inFlight = undefined;
      });
    return inFlight;
  }

  async function checkpoint(): Promise<StoredAuditCheckpoint | undefined> {
    // One in flight may have read the head before rows this caller wants covered.
    await inFlight;
    return startOrJoin();
  }

  const timer = setInterval(() => {
    void startOrJoin();
  }, deps.intervalMs);
  timer.unref();

  return {
    noteAppended(lastSeq) {
      noticedSeq = Math.max(noticedSeq, lastSeq);
      if (!closed && noticedSeq - coveredSeq >= deps.rows) void startOrJoin();
    },
    checkpoint,
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(timer);
      await inFlight;
      await checkpoint();
    },
  };
}
