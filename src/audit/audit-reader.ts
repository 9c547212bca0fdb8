import type { Kysely } from "kysely";
import { type AuditEventQuery, type AuditEventView, queryAuditEvents } from "../store/audit.repository.js";
import type { Database } from "../store/schema.js";
import { type AuditChainVerdict, type VerifyAuditChainOptions, verifyAuditChain } from "./audit-chain.js";

export type { AuditEventQuery, AuditEventView } from "../store/audit.repository.js";

/** Reads the audit trail for operators: filtered rows, and the chain's verdict. */
export interface AuditReader {
  /** Rows matching `query`, oldest first (keyset paging by seq). */
  query(query: AuditEventQuery): Promise<AuditEventView[]>;
  /** Walks the hash chain and names the first row that was edited, deleted or moved. */
  verify(options?: VerifyAuditChainOptions): Promise<AuditChainVerdict>;
}

export function createAuditReader(deps: {
  db: Kysely<Database>;
  /**
   * This replica's pending audit writes, awaited before every read: an operator sees every
   * outcome this replica has already answered for. Omitted where nothing is buffered (the CLI).
   */
  flush?: () => Promise<void>;
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
  };
}
