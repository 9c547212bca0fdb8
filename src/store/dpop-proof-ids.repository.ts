import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

/**
 * Claims a DPoP proof id for every replica at once: one INSERT ... ON CONFLICT DO NOTHING, so the
 * first claim wins and any later one (from this or another replica) sees `false`. The row is
 * kept until `expiresAt`, when the proof is stale anyway.
 */
export async function claimDpopProofId(
  db: Kysely<Database>,
  idHash: Buffer,
  expiresAt: Date,
): Promise<boolean> {
  const claimed = await db
    .insertInto("dpop_proof_ids")
    .values({ id_hash: idHash, expires_at: expiresAt })
    .onConflict((oc) => oc.column("id_hash").doNothing())
    .returning("id_hash")
    .executeTakeFirst();
  return claimed !== undefined;
}

/** Housekeeping off the call path: drops ids whose proofs can no longer pass the freshness check. */
export async function deleteExpiredDpopProofIds(db: Kysely<Database>, now: Date): Promise<number> {
  const result = await db.deleteFrom("dpop_proof_ids").where("expires_at", "<", now).executeTakeFirst();
  return Number(result.numDeletedRows);
}
