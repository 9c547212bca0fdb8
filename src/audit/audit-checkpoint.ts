import { lengthPrefixed } from "../crypto/canonical-encoding.js";

const CHECKPOINT_LABEL = "keybroker/audit-checkpoint/v1";

/** What a checkpoint signs: the last row it covers, that row's chain hash, and when. */
export interface AuditCheckpointClaim {
  readonly seq: number;
  readonly chainHash: Uint8Array;
  readonly signedAt: Date;
}

function u64(value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(BigInt(value), 0);
  return out;
}

/**
 * The bytes a checkpoint's MAC covers, length-prefixed and labelled with a version, so a MAC
 * made for anything else (or another version of this format) never verifies as a checkpoint.
 */
export function checkpointMessage(claim: AuditCheckpointClaim): Buffer {
  return lengthPrefixed(CHECKPOINT_LABEL, u64(claim.seq), claim.chainHash, u64(claim.signedAt.getTime()));
}
