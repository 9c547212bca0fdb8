import { type Kysely, sql } from "kysely";
import { asBuffer } from "./bytes.js";
import type { Database } from "./schema.js";

/** A user's wrapped data key as stored. */
export interface StoredUserKey {
  readonly wrappedDataKey: Uint8Array;
  readonly masterKeyId: string;
  readonly dataKeyVersion: number;
  readonly encryptions: number;
}

export async function findUserKey(db: Kysely<Database>, userRef: Buffer): Promise<StoredUserKey | undefined> {
  const row = await db
    .selectFrom("users")
    .select(["wrapped_data_key", "master_key_id", "data_key_version", "encryptions"])
    .where("user_ref", "=", userRef)
    .executeTakeFirst();
  return (
    row && {
      wrappedDataKey: row.wrapped_data_key,
      masterKeyId: row.master_key_id,
      dataKeyVersion: row.data_key_version,
      encryptions: row.encryptions,
    }
  );
}

/** Inserts the user's first data key unless a concurrent request already did. */
export async function insertUserIfAbsent(
  db: Kysely<Database>,
  userRef: Buffer,
  wrappedDataKey: Uint8Array,
  masterKeyId: string,
): Promise<void> {
  await db
    .insertInto("users")
    .values({ user_ref: userRef, wrapped_data_key: wrappedDataKey, master_key_id: masterKeyId })
    .onConflict((oc) => oc.column("user_ref").doNothing())
    .execute();
}

/** Counts AES-GCM encryptions under the user's data key (nonce-collision budget). */
export async function addEncryptions(db: Kysely<Database>, userRef: Buffer, count: number): Promise<void> {
  await db
    .updateTable("users")
    .set({ encryptions: sql`encryptions + ${count}`, updated_at: sql`now()` })
    .where("user_ref", "=", userRef)
    .execute();
}

/**
 * Locks the user's row until the transaction ends and returns the key it holds. Every
 * writer that seals under the user's data key must hold this lock while it writes, and
 * check the key it sealed with is still this one (see rotateUserDataKey).
 */
export async function lockUserKey(db: Kysely<Database>, userRef: Buffer): Promise<StoredUserKey | undefined> {
  const row = await db
    .selectFrom("users")
    .select(["wrapped_data_key", "master_key_id", "data_key_version", "encryptions"])
    .where("user_ref", "=", userRef)
    .forUpdate()
    .executeTakeFirst();
  return (
    row && {
      wrappedDataKey: asBuffer(row.wrapped_data_key),
      masterKeyId: row.master_key_id,
      dataKeyVersion: row.data_key_version,
      encryptions: row.encryptions,
    }
  );
}
