import type { Kysely } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // F1: the last nonce signed for each secret whose provider signs one (Kraken), shared by every
  // replica. Its row lock, held from taking a nonce until the upstream answered, is what orders
  // one secret's requests across replicas. Holds no secret: a secret id and a counter.
  await db.schema
    .createTable("outbound_nonces")
    .addColumn("secret_id", "text", (c) => c.primaryKey())
    .addColumn("last_nonce", "bigint", (c) => c.notNull())
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("outbound_nonces").ifExists().execute();
}
