import type { Kysely } from "kysely";
import { asBuffer } from "./bytes.js";
import type { Database } from "./schema.js";

/** A signed checkpoint of the audit chain, as stored. */
export interface StoredAuditCheckpoint {
  /** The last audit row it covers. */
  readonly seq: number;
  /** That row's hash, which commits to every row before it. */
  readonly chainHash: Buffer;
  readonly signedAt: Date;
  /** The MAC key that signed it (a KMS key ARN, or "local:N"). */
  readonly keyId: string;
  readonly mac: Buffer;
}

/**
 * Stores a checkpoint; false when one for the same seq exists already (another replica signed
 * the same head first, which is just as good).
 */
export async function insertAuditCheckpoint(
  db: Kysely<Database>,
  checkpoint: StoredAuditCheckpoint,
): Promise<boolean> {
  const result = await db
    .insertInto("audit_checkpoints")
    .values({
      seq: checkpoint.seq,
      chain_hash: checkpoint.chainHash,
      signed_at: checkpoint.signedAt,
      key_id: checkpoint.keyId,
      mac: checkpoint.mac,
    })
    .onConflict((oc) => oc.column("seq").doNothing())
    .executeTakeFirst();
  return Number(result.numInsertedOrUpdatedRows ?? 0n) === 1;
}

/** The checkpoint covering the most rows, or undefined when none was ever written. */
export async function readNewestAuditCheckpoint(
  db: Kysely<Database>,
): Promise<StoredAuditCheckpoint | undefined> {
  const row = await db
    .selectFrom("audit_checkpoints")
    .selectAll()
    .orderBy("seq", "desc")
    .limit(1)
    .executeTakeFirst();
  return (
    row && {
      seq: row.seq,
      chainHash: asBuffer(row.chain_hash),
      signedAt: row.signed_at,
      keyId: row.key_id,
      mac: asBuffer(row.mac),
    }
  );
}
