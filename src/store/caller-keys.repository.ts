import { type Kysely, sql } from "kysely";
import { createBatchedLookup } from "./batched-lookup.js";
import { asBuffer } from "./bytes.js";
import { createdAtMicros, type KeysetPosition, pageOf } from "./keyset-page.js";
import type { PreparedRunner, PreparedStatement } from "./prepared.js";
import type { CallerKeyRow, Database } from "./schema.js";

/** A caller key as the hot path reads it: only its hash, never the key. */
export interface StoredCallerKey {
  readonly id: string;
  readonly name: string;
  readonly keyHash: Buffer;
  readonly scopes: readonly string[];
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  /** SHA-256 of the client certificate the key must arrive with (mTLS), or null if unbound. */
  readonly clientCertSha256: Buffer | null;
  /** When a misuse signal suspended the key, or null. */
  readonly suspendedAt: Date | null;
}

/** Metadata about a caller key; never includes the key or its hash. */
export interface CallerKeySummary {
  readonly id: string;
  readonly name: string;
  readonly last4: string;
  readonly scopes: readonly string[];
  readonly createdAt: Date;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  readonly lastUsedAt: Date | null;
  /** SHA-256 of the bound client certificate (public, not a secret), or null if unbound. */
  readonly clientCertSha256: Buffer | null;
  readonly suspendedAt: Date | null;
  /** The misuse signal that suspended the key, or null. */
  readonly suspendedReason: string | null;
}

export interface NewCallerKey {
  readonly id: string;
  readonly name: string;
  readonly keyHash: Buffer;
  readonly last4: string;
  readonly scopes: readonly string[];
  readonly expiresAt: Date | null;
  readonly clientCertSha256: Buffer | null;
}

export async function insertCallerKey(db: Kysely<Database>, key: NewCallerKey): Promise<void> {
  await db
    .insertInto("caller_keys")
    .values({
      id: key.id,
      name: key.name,
      key_hash: key.keyHash,
      last4: key.last4,
      scopes: [...key.scopes],
      expires_at: key.expiresAt,
      revoked_at: null,
      last_used_at: null,
      client_cert_sha256: key.clientCertSha256,
    })
    .execute();
}

// Hashes travel as hex text: a text[] parameter serialises the same on pg and PGlite.
const FIND_BY_HASHES: PreparedStatement = {
  name: "kb_caller_keys_by_hashes",
  text: `select id, name, key_hash, scopes, expires_at, revoked_at, client_cert_sha256, suspended_at
           from caller_keys
          where key_hash in (select decode(h, 'hex') from unnest($1::text[]) as h)`,
};

type CallerKeyLookupRow = Pick<
  CallerKeyRow,
  "id" | "name" | "key_hash" | "scopes" | "expires_at" | "revoked_at" | "client_cert_sha256" | "suspended_at"
>;

/** The stored caller keys among `hashes` (each a SHA-256 of a presented key), by hash in hex. */
export async function findCallerKeysByHashes(
  prepared: PreparedRunner,
  hashes: readonly Buffer[],
): Promise<Map<string, StoredCallerKey>> {
  const rows = await prepared.rows<CallerKeyLookupRow>(FIND_BY_HASHES, [
    hashes.map((h) => h.toString("hex")),
  ]);
  const found = new Map<string, StoredCallerKey>();
  for (const row of rows) {
    const keyHash = asBuffer(row.key_hash);
    found.set(keyHash.toString("hex"), {
      id: row.id,
      name: row.name,
      keyHash,
      scopes: row.scopes,
      expiresAt: row.expires_at,
      revokedAt: row.revoked_at,
      clientCertSha256: row.client_cert_sha256 === null ? null : asBuffer(row.client_cert_sha256),
      suspendedAt: row.suspended_at,
    });
  }
  return found;
}

/**
 * Hot path: every call authenticates its caller, uncached so a revocation takes effect at once.
 * Lookups of one moment share a query (see batched-lookup.ts: never one already in flight).
 */
export function createCallerKeyLookup(prepared: PreparedRunner): {
  findByHash(hash: Buffer): Promise<StoredCallerKey | undefined>;
} {
  const lookup = createBatchedLookup<Buffer, StoredCallerKey>({
    load: (hashes) => findCallerKeysByHashes(prepared, hashes),
    idOf: (hash) => hash.toString("hex"),
    maxBatch: 256,
    maxInFlight: 2,
  });
  return { findByHash: (hash) => lookup.get(hash) };
}

export async function listCallerKeys(db: Kysely<Database>): Promise<CallerKeySummary[]> {
  const rows = await db.selectFrom("caller_keys").selectAll().orderBy("created_at").orderBy("id").execute();
  return rows.map(toSummary);
}

/** Caller-key lists tell their page tokens apart from other lists' by this. */
export const CALLER_KEYS_PAGE_KIND = "k";

/** One page of caller keys in (created_at, id) order, after `after`; a handful of rows: no index. */
export async function listCallerKeysPage(
  db: Kysely<Database>,
  query: { after: KeysetPosition | undefined; size: number },
): Promise<{ keys: CallerKeySummary[]; nextPageToken: string }> {
  const { after } = query;
  const rows = await db
    .selectFrom("caller_keys as k")
    .selectAll()
    .select(sql<number>`${sql.raw(createdAtMicros("k"))}`.as("created_at_micros"))
    .$if(after !== undefined, (q) =>
      q.where(
        sql<boolean>`(k.created_at, k.id) > ('epoch'::timestamptz + ${after?.createdAtMicros}::int8 * interval '1 microsecond', ${after?.id}::text)`,
      ),
    )
    .orderBy("k.created_at")
    .orderBy("k.id")
    .limit(query.size + 1)
    .execute();
  const page = pageOf(
    CALLER_KEYS_PAGE_KIND,
    rows.map((row) => ({ row, id: row.id, createdAtMicros: row.created_at_micros })),
    query.size,
  );
  return { keys: page.rows.map(({ row }) => toSummary(row)), nextPageToken: page.nextPageToken };
}

/** Revokes a key that is not yet revoked; returns false when there is no such live key. */
export async function revokeCallerKey(db: Kysely<Database>, id: string, at: Date): Promise<boolean> {
  const result = await db
    .updateTable("caller_keys")
    .set({ revoked_at: at })
    .where("id", "=", id)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/**
 * Suspends a live key (a misuse signal's automatic response); false when it is unknown, revoked or
 * already suspended. Every replica reads the row on each call, so the suspension holds fleet-wide.
 */
export async function suspendCallerKey(
  db: Kysely<Database>,
  id: string,
  reason: string,
  at: Date,
): Promise<boolean> {
  const result = await db
    .updateTable("caller_keys")
    .set({ suspended_at: at, suspended_reason: reason })
    .where("id", "=", id)
    .where("suspended_at", "is", null)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** Lifts a suspension; false when the key is unknown or not suspended. */
export async function reinstateCallerKey(db: Kysely<Database>, id: string): Promise<boolean> {
  const result = await db
    .updateTable("caller_keys")
    .set({ suspended_at: null, suspended_reason: null })
    .where("id", "=", id)
    .where("suspended_at", "is not", null)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

export async function markCallerKeyUsed(db: Kysely<Database>, id: string, at: Date): Promise<void> {
  await db.updateTable("caller_keys").set({ last_used_at: at }).where("id", "=", id).execute();
}

function toSummary(row: CallerKeyRow): CallerKeySummary {
  return {
    id: row.id,
    name: row.name,
    last4: row.last4,
    scopes: row.scopes,
    createdAt: row.created_at,
    expiresAt: row.expires_at,
    revokedAt: row.revoked_at,
    lastUsedAt: row.last_used_at,
    clientCertSha256: row.client_cert_sha256 === null ? null : asBuffer(row.client_cert_sha256),
    suspendedAt: row.suspended_at,
    suspendedReason: row.suspended_reason,
  };
}

export async function findCallerKeyById(
  db: Kysely<Database>,
  id: string,
): Promise<CallerKeySummary | undefined> {
  const row = await db.selectFrom("caller_keys").selectAll().where("id", "=", id).executeTakeFirst();
  return row && toSummary(row);
}

/** Shortens a live key's life (rotation overlap); never extends it. */
export async function expireCallerKeyBy(db: Kysely<Database>, id: string, at: Date): Promise<void> {
  await db
    .updateTable("caller_keys")
    .set({ expires_at: at })
    .where("id", "=", id)
    .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", at)]))
    .execute();
}
