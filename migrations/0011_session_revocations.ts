import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Issue 14: a logout refuses every token of a user (or of one session) issued before it, on
  // every replica. Rows name the user by user ref and the session by an HMAC of its `sid`, both
  // under the pepper: never a raw `sub` or `sid`. Replicas load this table at start and on
  // reconnect; NOTIFY keeps them current in between.
  await db.schema
    .createTable("session_revocations")
    .addColumn("subject_kind", "text", (c) => c.notNull().check(sql`subject_kind in ('user', 'session')`))
    .addColumn("subject_ref", "bytea", (c) => c.notNull().check(sql`octet_length(subject_ref) = 32`))
    // Epoch seconds (the unit of `iat`): tokens issued at or before it are refused.
    .addColumn("revoked_before", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(db.fn("now")))
    .addPrimaryKeyConstraint("session_revocations_pk", ["subject_kind", "subject_ref"])
    .execute();
  // Each logout token is accepted once (`jti`), across replicas: SHA-256 of (iss, jti), kept
  // until the token could no longer pass the freshness check.
  await db.schema
    .createTable("logout_token_ids")
    .addColumn("id_hash", "bytea", (c) => c.primaryKey().check(sql`octet_length(id_hash) = 32`))
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("logout_token_ids").ifExists().execute();
  await db.schema.dropTable("session_revocations").ifExists().execute();
}
