import { hash } from "node:crypto";
import type { Kysely } from "kysely";
import { BrokerError } from "../errors.js";
import {
  findAuditHash,
  readAuditChainHead,
  readAuditRowsAfter,
  type StoredAuditRow,
} from "../store/audit.repository.js";
import type { Database } from "../store/schema.js";
import { encodeAuditEntry } from "./audit-encoding.js";
import type { AuditEntry } from "./audit-entry.js";

/** The prev_hash of the first row. */
export const GENESIS_HASH: Buffer = Buffer.alloc(32);

/** hash = SHA-256(prev_hash ‖ canonical encoding of every other column, seq included). */
export function chainHash(prevHash: Uint8Array, seq: number, entry: AuditEntry): Buffer {
  return hash("sha256", Buffer.concat([prevHash, encodeAuditEntry(seq, entry)]), "buffer");
}

export type AuditChainFault = "hash_mismatch" | "gap" | "out_of_order" | "prev_hash_mismatch";

/** The result of walking the chain: all good, or the first row that is not. */
export type AuditChainVerdict =
  | { readonly ok: true; readonly rows: number; readonly lastSeq: number }
  | {
      readonly ok: false;
      readonly rows: number;
      readonly firstBadSeq: number;
      readonly reason: AuditChainFault;
    };

export interface VerifyAuditChainOptions {
  /** Start here, trusting the stored hash of the row before it; default 1 (the whole chain). */
  readonly fromSeq?: number | undefined;
  /** Rows per query; memory stays bounded by this however long the chain is. Default 1000. */
  readonly batchSize?: number | undefined;
}

const DEFAULT_BATCH_SIZE = 1000;

function entryOf(row: StoredAuditRow): AuditEntry {
  return {
    occurredAt: row.occurredAt,
    requestId: row.requestId,
    callerKeyId: row.callerKeyId,
    userRef: row.userRef,
    action: row.action,
    target: row.target,
    outcome: row.outcome,
    code: row.code,
    detail: row.detail,
  };
}

/**
 * Walks the audit trail in seq order and names the first row that was edited (its hash no longer
 * matches), deleted (a gap, or the next row's prev_hash no longer links), or moved (its prev_hash
 * is the hash of a row that comes after it). A SHA-256 chain shows tampering by anyone who did not
 * also recompute every later hash and the head; it is evidence, not a signature.
 */
export async function verifyAuditChain(
  db: Kysely<Database>,
  options: VerifyAuditChainOptions = {},
): Promise<AuditChainVerdict> {
  const fromSeq = options.fromSeq ?? 1;
  const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE;
  if (!Number.isSafeInteger(fromSeq) || fromSeq < 1 || !Number.isSafeInteger(batchSize) || batchSize < 1) {
    throw new BrokerError("invalid_argument", "fromSeq and batchSize must be positive integers");
  }
  // Rows and head are committed together, so every row visible before this read must be found,
  // or the end of the trail was cut off.
  const headBefore = await readAuditChainHead(db);

  let prevHash: Buffer = GENESIS_HASH;
  if (fromSeq > 1) {
    const anchor = await findAuditHash(db, fromSeq - 1);
    if (anchor === undefined) return { ok: false, rows: 0, firstBadSeq: fromSeq - 1, reason: "gap" };
    prevHash = anchor;
  }

  let expected = fromSeq;
  let rows = 0;
  const bad = (firstBadSeq: number, reason: AuditChainFault): AuditChainVerdict => ({
    ok: false,
    rows,
    firstBadSeq,
    reason,
  });

  // Walks to the end of the table, including rows live replicas append meanwhile: each must link.
  for (;;) {
    const batch = await readAuditRowsAfter(db, expected - 1, batchSize);
    for (const [index, row] of batch.entries()) {
      if (row.seq < expected) return bad(row.seq, "out_of_order");
      if (row.seq > expected) return bad(expected, "gap");
      if (!row.prevHash.equals(prevHash)) {
        // Its prev_hash is the hash of a later row: the two were swapped.
        const movedBack = batch.slice(index + 1).some((later) => later.hash.equals(row.prevHash));
        return bad(row.seq, movedBack ? "out_of_order" : "prev_hash_mismatch");
      }
      if (!chainHash(prevHash, row.seq, entryOf(row)).equals(row.hash)) return bad(row.seq, "hash_mismatch");
      prevHash = row.hash;
      expected += 1;
      rows += 1;
    }
    if (batch.length < batchSize) break;
  }
  const lastSeq = expected - 1;

  if (headBefore !== undefined && lastSeq < headBefore.lastSeq) return bad(expected, "gap");
  const headAfter = await readAuditChainHead(db);
  if (headAfter !== undefined) {
    // Rows the head does not account for were written outside the chain (or the head was rolled back).
    if (headAfter.lastSeq < lastSeq) return bad(headAfter.lastSeq + 1, "out_of_order");
    // The head holds the last hash too: a rewritten final row, hash recomputed, still shows.
    if (headAfter.lastSeq === lastSeq && !headAfter.lastHash.equals(prevHash))
      return bad(lastSeq, "hash_mismatch");
  }
  return { ok: true, rows, lastSeq };
}
