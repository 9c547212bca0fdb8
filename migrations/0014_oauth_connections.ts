import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Issue 15: an OAuth connection IS a secret of the user (its sealed fields are access_token and
  // optional refresh_token). Its non-secret state lives beside it; every column is null for a
  // secret that is not a connection. The state describes the secret's current_version: it is
  // written in the same transaction as the version it describes.
  await db.schema
    .alterTable("secrets")
    .addColumn("oauth_status", "text", (c) => c.check(sql`oauth_status in ('active', 'needs_reconsent')`))
    // When the current access token expires; null: the provider did not say (it does not expire).
    .addColumn("oauth_expires_at", "timestamptz")
    // The scopes the provider granted (which may differ from the ones asked for).
    .addColumn("oauth_scopes", sql`text[]`)
    // Single-flight refresh across replicas without holding a transaction over an HTTP call:
    // a replica that sets this (compare-and-set) refreshes; others wait for the new version.
    .addColumn("oauth_refresh_lease_until", "timestamptz")
    .execute();
  await db.schema
    .alterTable("secrets")
    .addCheckConstraint("secrets_oauth_state_complete", sql`(oauth_status is null) = (oauth_scopes is null)`)
    .execute();

  // The broker's OAuth client registration per provider. The client id is public (it is in every
  // authorization URL); the client secret is sealed under a data key the keyring wraps, with the
  // provider, version and client id authenticated, so a row cannot be replayed for another.
  await db.schema
    .createTable("oauth_apps")
    .addColumn("provider", "text", (c) => c.primaryKey())
    .addColumn("version", "integer", (c) => c.notNull().check(sql`version >= 1`))
    .addColumn("client_id", "text", (c) => c.notNull())
    .addColumn("wrapped_key", "bytea", (c) => c.notNull())
    .addColumn("master_key_id", "text", (c) => c.notNull())
    .addColumn("secret_ciphertext", "bytea", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(db.fn("now")))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(db.fn("now")))
    .execute();

  // Pending authorizations, one per StartConnection. Only SHA-256(state) is stored, so a database
  // reader cannot forge a callback; a row is deleted when consumed (single use) and is refused
  // after expires_at. The PKCE verifier is sealed like an app secret.
  await db.schema
    .createTable("oauth_authorizations")
    .addColumn("state_hash", "bytea", (c) => c.primaryKey())
    .addColumn("user_ref", "bytea", (c) => c.notNull())
    // What rebuilds the user's session at the callback (a PIN user's unlock is per session).
    .addColumn("session_ref", "bytea")
    .addColumn("token_issued_at", "bigint")
    .addColumn("token_expires_at", "bigint", (c) => c.notNull())
    .addColumn("caller_key_id", "text", (c) => c.notNull())
    .addColumn("provider", "text", (c) => c.notNull())
    .addColumn("scopes", sql`text[]`, (c) => c.notNull())
    .addColumn("return_url", "text", (c) => c.notNull())
    // Reconnecting an existing connection: the secret that gets the new version.
    .addColumn("secret_id", "uuid")
    .addColumn("label", "text")
    .addColumn("wrapped_key", "bytea", (c) => c.notNull())
    .addColumn("master_key_id", "text", (c) => c.notNull())
    .addColumn("verifier_ciphertext", "bytea", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(db.fn("now")))
    .addColumn("expires_at", "timestamptz", (c) => c.notNull())
    .execute();
  await db.schema
    .createIndex("oauth_authorizations_expires_at")
    .on("oauth_authorizations")
    .column("expires_at")
    .execute();
  await db.schema
    .createIndex("oauth_authorizations_user_ref")
    .on("oauth_authorizations")
    .column("user_ref")
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("oauth_authorizations").ifExists().execute();
  await db.schema.dropTable("oauth_apps").ifExists().execute();
  await db.schema.alterTable("secrets").dropConstraint("secrets_oauth_state_complete").ifExists().execute();
  await db.schema
    .alterTable("secrets")
    .dropColumn("oauth_status")
    .dropColumn("oauth_expires_at")
    .dropColumn("oauth_scopes")
    .dropColumn("oauth_refresh_lease_until")
    .execute();
}
