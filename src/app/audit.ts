import { type AuditLog, createAuditLog } from "../audit/audit-log.js";
import { type AuditedRunner, createAuditedRunner } from "../audit/audited-operation.js";
import type { Logger } from "../log/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { tracedAuditLog } from "../observability/traced-parts.js";
import type { Tracing } from "../observability/tracing.js";
import type { DatabaseHandle } from "../store/database.js";
import type { Lifecycle } from "./lifecycle.js";

export interface AuditDeps {
  readonly database: DatabaseHandle;
  readonly logger: Logger;
  /** Counts failed writes (the broker); operator commands have no metrics. */
  readonly metrics?: Pick<Metrics, "auditWriteFailed" | "auditBatch"> | undefined;
  /** Told the chain's last seq after each committed batch (the checkpointer's row count, M1). */
  readonly onAppended?: ((lastSeq: number) => void) | undefined;
  /** When tracing is on: every record inside a span. */
  readonly tracing?: Tracing | undefined;
}

export interface Audit {
  readonly log: AuditLog;
  /** Runs an operation with its attempt and outcome rows (audited-operation.ts). */
  readonly audited: AuditedRunner;
}

/** The audit trail; the lifecycle flushes it before the database it writes to is closed. */
export function openAudit(lifecycle: Lifecycle, deps: AuditDeps): Audit {
  const { database, logger, metrics, onAppended } = deps;
  const written = createAuditLog({
    prepared: database.prepared,
    // Flush in the same event-loop turn: at low load a 2 ms batching delay would sit on
    // every sensitive call's latency; under load batches still form while one is in flight.
    batchMaxDelayMs: 0,
    ...(onAppended === undefined ? {} : { onAppended }),
    ...(metrics === undefined
      ? {}
      : { onBatch: ({ path, rows, durationMs }) => metrics.auditBatch(path, rows, durationMs) }),
    onWriteFailure: (err) => {
      metrics?.auditWriteFailed();
      logger.error({ err }, "audit trail write failed");
    },
  });
  lifecycle.defer("audit log", () => written.close());
  const log = deps.tracing === undefined ? written : tracedAuditLog(written, deps.tracing);
  return { log, audited: createAuditedRunner({ audit: log, logger }) };
}
