import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // The audit trail (SPEC I8): one row per event, hash-chained in `seq` order.
  // Holds no secret, token or raw user id (I7): users appear only as their HMAC'd user_ref.
  await db.schema
    .createTable("audit_events")
    .addColumn("seq", "bigint", (c) => c.primaryKey())
    .addColumn("occurred_at", "timestamptz", (c) => c.notNull())
    .addColumn("request_id", "text", (c) => c.notNull())
    .addColumn("caller_key_id", "text")
    .addColumn("user_ref", "bytea")
    .addColumn("action", "text", (c) => c.notNull())
    .addColumn("target", "text")
    .addColumn("outcome", "text", (c) =>
      c.notNull().check(sql`outcome in ('started', 'ok', 'denied', 'error')`),
    )
    .addColumn("code", "text")
    .addColumn("detail", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("prev_hash", "bytea", (c) => c.notNull().check(sql`octet_length(prev_hash) = 32`))
    .addColumn("hash", "bytea", (c) => c.notNull().check(sql`octet_length(hash) = 32`))
    .execute();

  // Only what the admin query filters on; every index is paid for on the hot insert path.
  await db.schema
    .createIndex("audit_events_user_ref_seq_idx")
    .on("audit_events")
    .columns(["user_ref", "seq"])
    .where(sql.ref("user_ref"), "is not", null)
    .execute();
  await db.schema
    .createIndex("audit_events_occurred_at_idx")
    .on("audit_events")
    .column("occurred_at")
    .execute();

  // Append-only for the broker's own role: an application bug or an injected statement cannot
  // rewrite history. The table owner can still disable this, which is what the hash chain is for.
  await sql`
    create function audit_events_append_only() returns trigger language plpgsql as $$
    begin
      raise exception 'audit_events is append-only' using errcode = 'insufficient_privilege';
    end
    $$`.execute(db);
  await sql`
    create trigger audit_events_append_only before update or delete on audit_events
    for each statement execute function audit_events_append_only()`.execute(db);

  // The chain's tip, one row. Writers lock it FOR UPDATE to append, which keeps the chain
  // linear across replicas; it also lets verification notice rows cut off the end.
  await db.schema
    .createTable("audit_chain_head")
    .addColumn("id", "smallint", (c) => c.primaryKey().check(sql`id = 1`))
    .addColumn("last_seq", "bigint", (c) => c.notNull())
    .addColumn("last_hash", "bytea", (c) => c.notNull().check(sql`octet_length(last_hash) = 32`))
    .execute();
  await sql`
    insert into audit_chain_head (id, last_seq, last_hash)
    values (1, 0, decode(repeat('00', 32), 'hex'))`.execute(db);
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("audit_chain_head").ifExists().execute();
  await db.schema.dropTable("audit_events").ifExists().execute();
  await sql`drop function if exists audit_events_append_only()`.execute(db);
}
