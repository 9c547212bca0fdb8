import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Issue 13 (SPEC I10): the operation classes a secret may be used for, sorted. Its integrity
  // comes from the head MAC (a v2 head covers it), not from this column. Null: stored before
  // grants, so the secret has its provider's default grant and keeps its v1 head.
  await db.schema
    .alterTable("secrets")
    .addColumn("operation_grant", sql`text[]`, (c) =>
      c.check(sql`operation_grant is null or cardinality(operation_grant) <= 16`),
    )
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("secrets").dropColumn("operation_grant").execute();
}
