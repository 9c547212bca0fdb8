import { type Kysely, sql } from "kysely";
import { asBuffer } from "./bytes.js";
import type { Database } from "./schema.js";

/** The NOTIFY channel every replica listens on for new revocations. */
export const SESSION_REVOCATIONS_CHANNEL = "keybroker_session_revocations";

/** Whose tokens a revocation refuses: one user's (all sessions) or one session's. */
export type RevocationSubject = "user" | "session";

/** Tokens of `subject` issued at or before `revokedBefore` (epoch seconds) are refused. */
export interface StoredRevocation {
  readonly kind: RevocationSubject;
  /** 32 bytes: the user ref, or the HMAC'd session id. */
  readonly ref: Buffer;
  readonly revokedBefore: number;
}

export type LogoutRecord =
  | { readonly outcome: "recorded"; readonly revocations: readonly StoredRevocation[] }
  | { readonly outcome: "replayed" };

/**
 * Records a logout in one transaction: claims the logout token's id (if any; a second claim, from
 * any replica, is a replay and changes nothing), raises each revocation to at least the given
 * time (never lowers it), and notifies every listening replica. NOTIFY is delivered on commit,
 * so no replica hears of a revocation that did not persist. Returns the stored times.
 */
export async function recordLogout(
  db: Kysely<Database>,
  input: {
    readonly tokenId?: { readonly hash: Buffer; readonly expiresAt: Date } | undefined;
    readonly revocations: readonly StoredRevocation[];
  },
): Promise<LogoutRecord> {
  return db.transaction().execute(async (trx) => {
    if (input.tokenId !== undefined) {
      // Housekeeping, bounded by the freshness window: only ids that can no longer be replayed.
      await trx.deleteFrom("logout_token_ids").where("expires_at", "<", new Date()).execute();
      const claimed = await trx
        .insertInto("logout_token_ids")
        .values({ id_hash: input.tokenId.hash, expires_at: input.tokenId.expiresAt })
        .onConflict((oc) => oc.column("id_hash").doNothing())
        .returning("id_hash")
        .executeTakeFirst();
      if (claimed === undefined) return { outcome: "replayed" } as const;
    }
    const stored: StoredRevocation[] = [];
    for (const revocation of input.revocations) {
      const row = await trx
        .insertInto("session_revocations")
        .values({
          subject_kind: revocation.kind,
          subject_ref: revocation.ref,
          revoked_before: revocation.revokedBefore,
        })
        .onConflict((oc) =>
          oc.columns(["subject_kind", "subject_ref"]).doUpdateSet({
            revoked_before: sql<number>`greatest(excluded.revoked_before, session_revocations.revoked_before)`,
            updated_at: sql<Date>`now()`,
          }),
        )
        .returning("revoked_before")
        .executeTakeFirstOrThrow();
      const effective = { ...revocation, revokedBefore: Number(row.revoked_before) };
      stored.push(effective);
      await sql`select pg_notify(${SESSION_REVOCATIONS_CHANNEL}, ${encodeRevocationNotice(effective)})`.execute(
        trx,
      );
    }
    return { outcome: "recorded", revocations: stored } as const;
  });
}

/** Every revocation, for a replica starting or reconnecting. */
export async function loadRevocations(db: Kysely<Database>): Promise<StoredRevocation[]> {
  const rows = await db
    .selectFrom("session_revocations")
    .select(["subject_kind", "subject_ref", "revoked_before"])
    .execute();
  return rows.map((r) => ({
    kind: r.subject_kind,
    ref: asBuffer(r.subject_ref),
    revokedBefore: Number(r.revoked_before),
  }));
}

/**
 * Deletes every revocation whose time is before `cutoffSec` (epoch seconds). Only safe when every
 * token issued at or before that time is refused anyway (by the maximum token age): the caller,
 * src/auth/session-revocation-pruning.ts, computes the cutoff. Returns how many rows went.
 */
export async function pruneRevocations(db: Kysely<Database>, cutoffSec: number): Promise<number> {
  const result = await db
    .deleteFrom("session_revocations")
    .where("revoked_before", "<", cutoffSec)
    .executeTakeFirst();
  return Number(result.numDeletedRows);
}

/** "user:<hex ref>:<seconds>": refs are HMACs, so the payload carries no raw identifier. */
export function encodeRevocationNotice(revocation: StoredRevocation): string {
  return `${revocation.kind}:${revocation.ref.toString("hex")}:${revocation.revokedBefore}`;
}

const NOTICE = /^(user|session):([0-9a-f]{64}):(\d{1,15})$/;

/** The notice, or undefined for anything this version did not write. */
export function decodeRevocationNotice(payload: string): StoredRevocation | undefined {
  const match = NOTICE.exec(payload);
  if (match === null) return undefined;
  const [, kind, hex, seconds] = match;
  if (kind === undefined || hex === undefined || seconds === undefined) return undefined;
  return { kind: kind as RevocationSubject, ref: Buffer.from(hex, "hex"), revokedBefore: Number(seconds) };
}
