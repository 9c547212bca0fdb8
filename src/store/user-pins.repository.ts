import { type Kysely, sql } from "kysely";
import type { Database } from "./schema.js";

/** How wrong PINs are slowed down, then locked out (config KEYBROKER_PIN_*). */
export interface PinAttemptPolicy {
  /** Guesses allowed before a lockout. */
  readonly maxAttempts: number;
  /** The wait after the first wrong guess; it doubles with each one after. */
  readonly backoffMs: number;
  /** The wait once `maxAttempts` guesses have failed (and after each further one). */
  readonly lockoutMs: number;
}

export type PinAttemptClaim =
  | { readonly claimed: true; readonly attempt: number; readonly lockedOut: boolean }
  | { readonly claimed: false; readonly retryAfterMs: number };

/**
 * Charges one guess BEFORE the PIN is checked, in one statement, so concurrent guesses on any
 * number of replicas can never exceed the policy: the row lock serialises them and each sets the
 * wait the next one meets. A correct PIN then clears the row (`clearPinAttempts`). Refused (not
 * claimed) while the user is backing off or locked out.
 */
export async function claimPinAttempt(
  db: Kysely<Database>,
  userRef: Buffer,
  policy: PinAttemptPolicy,
): Promise<PinAttemptClaim> {
  const { maxAttempts, backoffMs, lockoutMs } = policy;
  // The wait this guess imposes on the next, if it turns out wrong: backoff·2^(n-1), or the lockout.
  const wait = (attempts: ReturnType<typeof sql>) =>
    sql`(case when ${attempts} >= ${maxAttempts} then ${lockoutMs}::float8
          else least(${backoffMs}::float8 * power(2, ${attempts} - 1), ${lockoutMs}::float8) end)
        * interval '1 millisecond'`;
  const charged = await sql<{ failed_attempts: number }>`
    insert into user_pin_attempts as a (user_ref, failed_attempts, locked_until)
    values (${userRef}, 1, now() + ${wait(sql`1`)})
    on conflict (user_ref) do update
      set failed_attempts = a.failed_attempts + 1,
          locked_until = now() + ${wait(sql`(a.failed_attempts + 1)`)},
          updated_at = now()
      where a.locked_until <= now()
    returning failed_attempts`.execute(db);
  const row = charged.rows[0];
  if (row !== undefined) {
    return { claimed: true, attempt: row.failed_attempts, lockedOut: row.failed_attempts >= maxAttempts };
  }
  const left = await sql<{ ms: number }>`
    select greatest(0, extract(epoch from (locked_until - now())) * 1000)::float8 as ms
    from user_pin_attempts where user_ref = ${userRef}`.execute(db);
  return { claimed: false, retryAfterMs: Math.ceil(Number(left.rows[0]?.ms ?? 0)) };
}

/** A correct PIN: the user starts afresh. */
export async function clearPinAttempts(db: Kysely<Database>, userRef: Buffer): Promise<void> {
  await db.deleteFrom("user_pin_attempts").where("user_ref", "=", userRef).execute();
}

/** Replaces the user's stored data key (plain → PIN envelope, or a new PIN's envelope). */
export async function replaceWrappedDataKey(
  db: Kysely<Database>,
  userRef: Buffer,
  expected: Uint8Array,
  next: { readonly wrapped: Uint8Array; readonly masterKeyId: string },
): Promise<boolean> {
  // Compare-and-set on the bytes read: a concurrent SetPin, rotation or shred wins, this one retries.
  const result = await db
    .updateTable("users")
    .set({ wrapped_data_key: next.wrapped, master_key_id: next.masterKeyId, updated_at: sql`now()` })
    .where("user_ref", "=", userRef)
    .where("wrapped_data_key", "=", expected)
    .executeTakeFirst();
  return result.numUpdatedRows === 1n;
}
