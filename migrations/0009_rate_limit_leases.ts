import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Rate limits shared by every replica (issue 13 item 6): one row per (bucket, fixed window).
  // Replicas lease blocks of tokens from `used` (one upsert per block, never one per call);
  // `used` never passes the limit the leasing replica names. `last_grant` is what the latest
  // lease took, so the upsert can return it. A bucket names a secret id or a caller key id,
  // never a user: no user ref, no raw id, nothing secret (I5, I7).
  await db.schema
    .createTable("rate_limit_leases")
    .addColumn("bucket", "text", (c) => c.notNull())
    .addColumn("window_start", "bigint", (c) => c.notNull())
    .addColumn("used", "integer", (c) => c.notNull().check(sql`used >= 0`))
    .addColumn("last_grant", "integer", (c) => c.notNull())
    .addPrimaryKeyConstraint("rate_limit_leases_pkey", ["bucket", "window_start"])
    .execute();
  // Expired windows are swept by age.
  await db.schema
    .createIndex("rate_limit_leases_window_start_idx")
    .on("rate_limit_leases")
    .column("window_start")
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("rate_limit_leases").ifExists().execute();
}
