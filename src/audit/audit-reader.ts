import type { Kysely } from "kysely";
import type { MacKey } from "../keys/mac-key.js";
import { type AuditEventQuery, type AuditEventView, queryAuditEvents } from "../store/audit.repository.js";
import type { Database } from "../store/schema.js";
import { type AuditChainVerdict, type VerifyAuditChainOptions, verifyAuditChain } from "./audit-chain.js";
import { type AuditCheckpointVerdict, verifyAgainstCheckpoint } from "./audit-checkpoint-verify.js";

export type { AuditEventQuery, AuditEventView } from "../store/audit.repository.js";

/** Reads the audit trail for operators: filtered rows, and the chain's verdict. */
export interface AuditReader {
  /** Rows matching `query`, oldest first (keyset paging by seq). */
  query(query: AuditEventQuery): Promise<AuditEventView[]>;
  /** Walks the hash chain and names the first row that was edited, deleted or moved. */
  verify(options?: VerifyAuditChainOptions): Promise<AuditChainVerdict>;
  /** The trail against its newest signed checkpoint; undefined without a checkpoint key. */
  verifyCheckpoint(): Promise<AuditCheckpointVerdict | undefined>;
}

export function createAuditReader(deps: {
  db: Kysely<Database>;
  /**
   * This replica's pending audit writes, awaited before every read: an operator sees every
   * outcome this replica has already answered for. Omitted where nothing is buffered (the CLI).
   */
  flush?: () => Promise<void>;
  /** The key checkpoints are signed with (M1); undefined where none is configured. */
  checkpointKey?: Pick<MacKey, "verifyMac"> | undefined;
}): AuditReader {
  const flush = deps.flush ?? (() => Promise.resolve());
  return {
    async query(query) {
      await flush();
      return queryAuditEvents(deps.db, query);
    },
    async verify(options) {
      await flush();
      return verifyAuditChain(deps.db, options);
    },
    async verifyCheckpoint() {
      if (deps.checkpointKey === undefined) return undefined;
      await flush();
      return verifyAgainstCheckpoint(deps.db, deps.checkpointKey);
    },
  };
}
