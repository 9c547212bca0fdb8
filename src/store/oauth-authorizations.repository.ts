import type { Kysely } from "kysely";
import type { Database } from "./schema.js";

/** A pending authorization as stored: the state only as its hash, the PKCE verifier sealed. */
export interface PendingAuthorization {
  readonly stateHash: Uint8Array;
  readonly userRef: Uint8Array;
  readonly sessionRef: Uint8Array | null;
  readonly tokenIssuedAt: number | null;
  readonly tokenExpiresAt: number;
  readonly callerKeyId: string;
  readonly provider: string;
  readonly scopes: readonly string[];
  readonly returnUrl: string;
  readonly secretId: string | null;
  readonly label: string | null;
  readonly wrappedKey: Uint8Array;
  readonly masterKeyId: string;
  readonly verifierCiphertext: Uint8Array;
  readonly expiresAt: Date;
}

export async function insertAuthorization(db: Kysely<Database>, row: PendingAuthorization): Promise<void> {
  await db
    .insertInto("oauth_authorizations")
    .values({
      state_hash: row.stateHash,
      user_ref: row.userRef,
      session_ref: row.sessionRef,
      token_issued_at: row.tokenIssuedAt,
      token_expires_at: row.tokenExpiresAt,
      caller_key_id: row.callerKeyId,
      provider: row.provider,
      scopes: [...row.scopes],
      return_url: row.returnUrl,
      secret_id: row.secretId,
      label: row.label,
      wrapped_key: row.wrappedKey,
      master_key_id: row.masterKeyId,
      verifier_ciphertext: row.verifierCiphertext,
      expires_at: row.expiresAt,
    })
    .execute();
}

/**
 * Takes the authorization a state names, once: the row is deleted in the same statement, so two
 * callbacks racing with one state cannot both get it. Expired rows are returned too (the caller
 * refuses them, and still learns the return URL to send the error to).
 */
export async function consumeAuthorization(
  db: Kysely<Database>,
  stateHash: Uint8Array,
): Promise<PendingAuthorization | undefined> {
  const row = await db
    .deleteFrom("oauth_authorizations")
    .where("state_hash", "=", stateHash)
    .returningAll()
    .executeTakeFirst();
  if (row === undefined) return undefined;
  return {
    stateHash: row.state_hash,
    userRef: row.user_ref,
    sessionRef: row.session_ref,
    tokenIssuedAt: row.token_issued_at,
    tokenExpiresAt: row.token_expires_at,
    callerKeyId: row.caller_key_id,
    provider: row.provider,
    scopes: row.scopes,
    returnUrl: row.return_url,
    secretId: row.secret_id,
    label: row.label,
    wrappedKey: row.wrapped_key,
    masterKeyId: row.master_key_id,
    verifierCiphertext: row.verifier_ciphertext,
    expiresAt: row.expires_at,
  };
}

/** Deletes authorizations that expired before `now`; returns how many. */
export async function deleteExpiredAuthorizations(db: Kysely<Database>, now: Date): Promise<number> {
  const result = await db.deleteFrom("oauth_authorizations").where("expires_at", "<", now).executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** Pending authorizations of one user (crypto-shred deletes them with the user). */
export async function deleteUserAuthorizations(db: Kysely<Database>, userRef: Uint8Array): Promise<number> {
  const result = await db
    .deleteFrom("oauth_authorizations")
    .where("user_ref", "=", userRef)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}
