import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // A caller key suspended by a misuse signal (issue 13 item 7) is refused like a revoked one until
  // an operator reinstates it. On the row, not in memory: every replica reads it on each call.
  await db.schema
    .alterTable("caller_keys")
    .addColumn("suspended_at", "timestamptz")
    .addColumn("suspended_reason", "text", (c) => c.check(sql`suspended_reason ~ '^[a-z_]{1,32}$'`))
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("caller_keys")
    .dropColumn("suspended_reason")
    .dropColumn("suspended_at")
    .execute();
}
