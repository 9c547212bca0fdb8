import type { Kysely } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Parallel rewrap (issue 17 item 4): the user_ref space of one target master key cut into
  // disjoint ranges that rewrap workers lease one at a time. A lease names its holder and
  // expires, so a worker that crashed gives its range up to another. Holds no user ref: a
  // range's bounds are fixed prefixes of the HMAC space, not anybody's row (I5).
  await db.schema
    .createTable("rewrap_ranges")
    .addColumn("target_key_id", "text", (c) => c.notNull())
    // Inclusive lower bound; the upper bound is the next range's start (none for the last one).
    .addColumn("range_start", "bytea", (c) => c.notNull())
    .addColumn("range_end", "bytea")
    .addColumn("owner", "text")
    .addColumn("lease_expires_at", "timestamptz")
    .addColumn("done_at", "timestamptz")
    .addPrimaryKeyConstraint("rewrap_ranges_pkey", ["target_key_id", "range_start"])
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("rewrap_ranges").ifExists().execute();
}
