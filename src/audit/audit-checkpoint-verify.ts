import type { Kysely } from "kysely";
import type { MacKey } from "../keys/mac-key.js";
import { findAuditHash, readAuditChainHead } from "../store/audit.repository.js";
import { readNewestAuditCheckpoint } from "../store/audit-checkpoints.repository.js";
import type { Database } from "../store/schema.js";
import { checkpointMessage } from "./audit-checkpoint.js";

/**
 * The trail against its newest signed checkpoint (M1):
 * - `none`: no checkpoint yet; every row is uncovered.
 * - `covered`: the row the checkpoint names is there with the hash it signed; `uncoveredRows`
 *   came after it (not yet signed, so a cut of those alone would not show).
 * - `forged`: the checkpoint's MAC does not verify under the configured key (edited or made up).
 * - `wiped`: the checkpoint covers rows, and the trail has none.
 * - `cut`: rows up to the checkpoint's seq are missing from the end.
 * - `rewritten`: the row at the checkpoint's seq has another hash: it, or a row before it, was
 *   changed and the chain recomputed.
 */
export type AuditCheckpointVerdict =
  | { readonly status: "none"; readonly uncoveredRows: number }
  | {
      readonly status: "covered";
      readonly checkpointSeq: number;
      readonly signedAt: Date;
      readonly uncoveredRows: number;
    }
  | {
      readonly status: "forged" | "wiped" | "cut" | "rewritten";
      readonly checkpointSeq: number;
      readonly signedAt: Date;
    };

export async function verifyAgainstCheckpoint(
  db: Kysely<Database>,
  macKey: Pick<MacKey, "verifyMac">,
  options: { readonly signal?: AbortSignal } = {},
): Promise<AuditCheckpointVerdict> {
  const head = await readAuditChainHead(db);
  const lastRow = await db
    .selectFrom("audit_events")
    .select((eb) => eb.fn.max("seq").as("seq"))
    .executeTakeFirst();
  const lastSeq = Math.max(Number(lastRow?.seq ?? 0), head?.lastSeq ?? 0);

  const checkpoint = await readNewestAuditCheckpoint(db);
  if (checkpoint === undefined) return { status: "none", uncoveredRows: lastSeq };
  const about = { checkpointSeq: checkpoint.seq, signedAt: checkpoint.signedAt };

  const authentic = await macKey.verifyMac(
    checkpointMessage(checkpoint),
    checkpoint.mac,
    checkpoint.keyId,
    options.signal === undefined ? {} : { signal: options.signal },
  );
  if (!authentic) return { status: "forged", ...about };

  const hash = await findAuditHash(db, checkpoint.seq);
  if (hash === undefined) {
    const anyRow = await db.selectFrom("audit_events").select("seq").limit(1).executeTakeFirst();
    return { status: anyRow === undefined ? "wiped" : "cut", ...about };
  }
  if (!hash.equals(checkpoint.chainHash)) return { status: "rewritten", ...about };
  return { status: "covered", ...about, uncoveredRows: Math.max(0, lastSeq - checkpoint.seq) };
}
