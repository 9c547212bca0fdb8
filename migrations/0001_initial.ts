import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Broker-wide values sealed by the keyring (the user-ref pepper). The database alone
  // cannot unseal them, so it cannot link a user_ref to a real identity (SPEC I5).
  await db.schema
    .createTable("broker_state")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("wrapped_value", "bytea", (c) => c.notNull())
    .addColumn("master_key_id", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  // Broker-issued caller credentials: only a SHA-256 of the key is stored.
  await db.schema
    .createTable("caller_keys")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("key_hash", "bytea", (c) => c.notNull().unique())
    .addColumn("last4", "text", (c) => c.notNull())
    .addColumn("scopes", sql`text[]`, (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("expires_at", "timestamptz")
    .addColumn("revoked_at", "timestamptz")
    .addColumn("last_used_at", "timestamptz")
    .execute();

  // One row per end user, keyed by HMAC(pepper, issuer | sub); holds the wrapped data key.
  await db.schema
    .createTable("users")
    .addColumn("user_ref", "bytea", (c) => c.primaryKey())
    .addColumn("wrapped_data_key", "bytea", (c) => c.notNull())
    .addColumn("master_key_id", "text", (c) => c.notNull())
    .addColumn("data_key_version", "integer", (c) => c.notNull().defaultTo(1))
    // AES-GCM with random nonces is safe for far fewer than 2^32 encryptions per key: count them.
    .addColumn("encryptions", "bigint", (c) => c.notNull().defaultTo(0))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("secrets")
    .addColumn("id", "uuid", (c) => c.primaryKey())
    .addColumn("user_ref", "bytea", (c) => c.notNull().references("users.user_ref").onDelete("cascade"))
    .addColumn("provider", "text", (c) => c.notNull())
    .addColumn("label", "text", (c) => c.notNull())
    .addColumn("current_version", "integer", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull())
    .addColumn("updated_at", "timestamptz", (c) => c.notNull())
    .addColumn("last_used_at", "timestamptz")
    .addUniqueConstraint("secrets_user_provider_label_key", ["user_ref", "provider", "label"])
    .execute();

  await db.schema
    .createTable("secret_versions")
    .addColumn("secret_id", "uuid", (c) => c.notNull().references("secrets.id").onDelete("cascade"))
    .addColumn("version", "integer", (c) => c.notNull())
    // AES-256-GCM under the user's data key; AAD binds (secret id, user ref, provider, version).
    .addColumn("ciphertext", "bytea", (c) => c.notNull())
    .addColumn("hint_ciphertext", "bytea", (c) => c.notNull())
    .addColumn("fingerprint", "text", (c) => c.notNull())
    .addColumn("field_names", sql`text[]`, (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull())
    .addPrimaryKeyConstraint("secret_versions_pkey", ["secret_id", "version"])
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  for (const table of ["secret_versions", "secrets", "users", "caller_keys", "broker_state"]) {
    await db.schema.dropTable(table).ifExists().execute();
  }
}
