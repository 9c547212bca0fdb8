import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // M1: signed checkpoints of the audit chain, as CloudTrail digest files. Each one is a MAC, by a
  // key the database cannot reach (KMS GenerateMac), over (seq, the chain hash at seq, time), so
  // a cut tail, a wipe or a rewrite of anything a checkpoint covers shows, even to someone who
  // recomputed every hash. Holds no secret: a MAC over public data.
  await db.schema
    .createTable("audit_checkpoints")
    .addColumn("seq", "bigint", (c) => c.primaryKey().check(sql`seq > 0`))
    .addColumn("chain_hash", "bytea", (c) => c.notNull().check(sql`octet_length(chain_hash) = 32`))
    .addColumn("signed_at", "timestamptz", (c) => c.notNull())
    .addColumn("key_id", "text", (c) => c.notNull())
    .addColumn("mac", "bytea", (c) => c.notNull())
    .execute();

  // Append-only like the events, and no TRUNCATE on any audit table: a statement-level
  // update/delete trigger does not fire on TRUNCATE, so 0002 left it open. Only the tables'
  // owner (the migration role, never the broker's runtime role) can disable these triggers.
  await sql`
    create function audit_refuse_change() returns trigger language plpgsql as $$
    begin
      raise exception '% is append-only', tg_table_name using errcode = 'insufficient_privilege';
    end
    $$`.execute(db);
  await sql`
    create trigger audit_checkpoints_append_only before update or delete on audit_checkpoints
    for each statement execute function audit_refuse_change()`.execute(db);
  for (const table of ["audit_events", "audit_chain_head", "audit_checkpoints"]) {
    await sql`
      create trigger ${sql.raw(`${table}_no_truncate`)} before truncate on ${sql.table(table)}
      for each statement execute function audit_refuse_change()`.execute(db);
  }
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ["audit_events", "audit_chain_head"]) {
    await sql`drop trigger if exists ${sql.raw(`${table}_no_truncate`)} on ${sql.table(table)}`.execute(db);
  }
  await db.schema.dropTable("audit_checkpoints").ifExists().execute();
  await sql`drop function if exists audit_refuse_change()`.execute(db);
}
