import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Issue 13 item 5: what the last inspection of the current key found (permissions read from
  // the provider, the dangerous ones among them, when). Names only, never a value. Rows from
  // before inspection existed read as "none".
  await db.schema
    .alterTable("secrets")
    .addColumn("inspection_verdict", "text", (c) =>
      c.notNull().defaultTo("none").check(sql`inspection_verdict in ('none', 'ok', 'warned', 'refused')`),
    )
    .addColumn("inspection_permissions", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn("inspection_dangerous", sql`text[]`, (c) => c.notNull().defaultTo(sql`'{}'::text[]`))
    .addColumn("inspected_at", "timestamptz")
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("secrets")
    .dropColumn("inspection_verdict")
    .dropColumn("inspection_permissions")
    .dropColumn("inspection_dangerous")
    .dropColumn("inspected_at")
    .execute();
}
