import { type Kysely, sql } from "kysely";

// Frozen in time: never edit a migration that has shipped; add a new one.
// biome-ignore lint/suspicious/noExplicitAny: migrations must not depend on today's schema types
export async function up(db: Kysely<any>): Promise<void> {
  // Optional mTLS binding (catalogue B22): the SHA-256 of the client certificate (DER) a caller
  // key must arrive with. Null means the key is not bound. A fingerprint is not a secret: the
  // certificate is public, possession of its private key is what the TLS handshake proves.
  await db.schema
    .alterTable("caller_keys")
    .addColumn("client_cert_sha256", "bytea", (c) => c.check(sql`octet_length(client_cert_sha256) = 32`))
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: see up()
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("caller_keys").dropColumn("client_cert_sha256").execute();
}
