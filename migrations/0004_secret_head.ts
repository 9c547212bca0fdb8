import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Catalogue L1: a MAC under the user's data key over (secret id, user ref, provider, current
  // version), so a pointer rolled back to an older version is detected on read. Existing rows
  // cannot be backfilled here (the key is in KMS, not in SQL): null means "not yet bound", and
  // the broker binds the secret on its next write or on the user's next data-key rotation.
  await db.schema
    .alterTable("secrets")
    .addColumn("head_mac", "bytea", (c) => c.check(sql`octet_length(head_mac) = 32`))
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("secrets").dropColumn("head_mac").execute();
}
