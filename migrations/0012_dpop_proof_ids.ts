import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Issue 14 (DPoP, RFC 9449 §11.1): each proof is accepted once across replicas. The key is
  // SHA-256 of (key thumbprint, jti), kept until the proof could no longer pass the freshness check.
  await db.schema
    .createTable("dpop_proof_ids")
    .addColumn("id_hash", "bytea", (c) => c.primaryKey().check(sql`octet_length(id_hash) = 32`))
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex("dpop_proof_ids_expires_at")
    .on("dpop_proof_ids")
    .column("expires_at")
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("dpop_proof_ids").ifExists().execute();
}
