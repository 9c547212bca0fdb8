import type { Kysely } from "kysely";
import type { PreparedRunner, PreparedStatement } from "./prepared.js";
import type { Database } from "./schema.js";

const CLAIM: PreparedStatement = {
  name: "kb_dpop_proof_id_claim",
  text: `insert into dpop_proof_ids (id_hash, expires_at) values ($1, $2)
         on conflict (id_hash) do nothing returning 1 as claimed`,
};

/**
 * Claims a DPoP proof id for every replica at once: one INSERT ... ON CONFLICT DO NOTHING, so the
 * first claim wins and any later one (from this or another replica) sees `false`. The row is
 * kept until `expiresAt`, when the proof is stale anyway. A prepared statement: it runs on every
 * DPoP call (see prepared.ts for why the hot path skips kysely).
 */
export async function claimDpopProofId(
  prepared: PreparedRunner,
  idHash: Buffer,
  expiresAt: Date,
): Promise<boolean> {
  const rows = await prepared.rows<{ claimed: number }>(CLAIM, [idHash, expiresAt]);
  return rows.length === 1;
}

/** Housekeeping off the call path: drops ids whose proofs can no longer pass the freshness check. */
export async function deleteExpiredDpopProofIds(db: Kysely<Database>, now: Date): Promise<number> {
  const result = await db.deleteFrom("dpop_proof_ids").where("expires_at", "<", now).executeTakeFirst();
  return Number(result.numDeletedRows);
}
