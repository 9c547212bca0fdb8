import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Issue 14 item 4: wrong-PIN attempts per user, shared by every replica. No PIN, no PIN hash
  // and no verifier lives here (or anywhere): the PIN envelope in users.wrapped_data_key is the
  // only check. A row is deleted on a correct PIN and with the user (crypto-shred).
  await db.schema
    .createTable("user_pin_attempts")
    .addColumn("user_ref", "bytea", (c) => c.primaryKey().references("users.user_ref").onDelete("cascade"))
    .addColumn("failed_attempts", "integer", (c) => c.notNull().check(sql`failed_attempts >= 0`))
    // No guess is checked before this instant (backoff, then lockout).
    .addColumn("locked_until", "timestamptz", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(db.fn("now")))
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("user_pin_attempts").ifExists().execute();
}
