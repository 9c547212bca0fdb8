import type { Kysely } from "kysely";
import { BrokerError } from "../errors.js";
import { asBuffer } from "./bytes.js";
import type { Database } from "./schema.js";

/** The chain's tip: the last appended seq and its hash. */
export interface AuditChainHead {
  readonly lastSeq: number;
  readonly lastHash: Buffer;
}

/** A fully formed audit row, hashes included, ready to insert. */
export interface NewAuditRow {
  readonly seq: number;
  readonly occurredAt: Date;
  readonly requestId: string;
  readonly callerKeyId: string | null;
  readonly userRef: Uint8Array | null;
  readonly action: string;
  readonly target: string | null;
  readonly outcome: string;
  readonly code: string | null;
  /** The detail map as JSON text. */
  readonly detailJson: string;
  readonly prevHash: Uint8Array;
  readonly hash: Uint8Array;
}

/** An audit row as stored, for verification: `detail` is whatever the jsonb column holds. */
export interface StoredAuditRow {
  readonly seq: number;
  readonly occurredAt: Date;
  readonly requestId: string;
  readonly callerKeyId: string | null;
  readonly userRef: Buffer | null;
  readonly action: string;
  readonly target: string | null;
  readonly outcome: string;
  readonly code: string | null;
  readonly detail: unknown;
  readonly prevHash: Buffer;
  readonly hash: Buffer;
}

/** An audit row for the admin API: no hashes, the user ref as hex. */
export interface AuditEventView {
  readonly seq: number;
  readonly occurredAt: Date;
  readonly requestId: string;
  readonly callerKeyId: string | null;
  readonly userRef: string | null;
  readonly action: string;
  readonly target: string | null;
  readonly outcome: string;
  readonly code: string | null;
  readonly detail: Readonly<Record<string, unknown>>;
}

/** Filters for `queryAuditEvents`; results come in seq order, after `afterSeq` (keyset paging). */
export interface AuditEventQuery {
  readonly userRef?: Uint8Array | undefined;
  readonly action?: string | undefined;
  readonly callerKeyId?: string | undefined;
  /** Inclusive. */
  readonly since?: Date | undefined;
  /** Exclusive. */
  readonly until?: Date | undefined;
  readonly limit: number;
  readonly afterSeq?: number | undefined;
}

export const MAX_AUDIT_QUERY_LIMIT = 1000;
const HEAD_ID = 1;

/**
 * Locks the chain head for the rest of the transaction; concurrent appenders, in this process or
 * another replica, queue here, which is what keeps the chain linear. Recreates a missing head
 * (an emptied table) at `genesisHash`; against surviving rows the next insert then fails on the
 * seq key, so the trail stops rather than forking.
 */
export async function lockAuditChainHead(
  trx: Kysely<Database>,
  genesisHash: Uint8Array,
): Promise<AuditChainHead> {
  const select = () =>
    trx
      .selectFrom("audit_chain_head")
      .select(["last_seq", "last_hash"])
      .where("id", "=", HEAD_ID)
      .forUpdate()
      .executeTakeFirst();
  let row = await select();
  if (row === undefined) {
    await trx
      .insertInto("audit_chain_head")
      .values({ id: HEAD_ID, last_seq: 0, last_hash: genesisHash })
      .onConflict((oc) => oc.column("id").doNothing())
      .execute();
    row = await select();
    if (row === undefined) throw new BrokerError("internal", "audit chain head is missing");
  }
  return { lastSeq: row.last_seq, lastHash: asBuffer(row.last_hash) };
}

/** Reads the head without locking (verification compares the rows against it). */
export async function readAuditChainHead(db: Kysely<Database>): Promise<AuditChainHead | undefined> {
  const row = await db
    .selectFrom("audit_chain_head")
    .select(["last_seq", "last_hash"])
    .where("id", "=", HEAD_ID)
    .executeTakeFirst();
  return row && { lastSeq: row.last_seq, lastHash: asBuffer(row.last_hash) };
}

/** Inserts a batch of rows and moves the head to the last one; call with the head locked. */
export async function appendAuditRows(trx: Kysely<Database>, rows: readonly NewAuditRow[]): Promise<void> {
  const last = rows.at(-1);
  if (last === undefined) return;
  await trx
    .insertInto("audit_events")
    .values(
      rows.map((r) => ({
        seq: r.seq,
        occurred_at: r.occurredAt,
        request_id: r.requestId,
        caller_key_id: r.callerKeyId,
        user_ref: r.userRef,
        action: r.action,
        target: r.target,
        outcome: r.outcome,
        code: r.code,
        detail: r.detailJson,
        prev_hash: r.prevHash,
        hash: r.hash,
      })),
    )
    .execute();
  await trx
    .updateTable("audit_chain_head")
    .set({ last_seq: last.seq, last_hash: last.hash })
    .where("id", "=", HEAD_ID)
    .execute();
}

/** Up to `limit` rows with seq > `afterSeq`, in seq order: keyset paging keeps memory bounded. */
export async function readAuditRowsAfter(
  db: Kysely<Database>,
  afterSeq: number,
  limit: number,
): Promise<StoredAuditRow[]> {
  const rows = await db
    .selectFrom("audit_events")
    .selectAll()
    .where("seq", ">", afterSeq)
    .orderBy("seq")
    .limit(limit)
    .execute();
  return rows.map((r) => ({
    seq: r.seq,
    occurredAt: r.occurred_at,
    requestId: r.request_id,
    callerKeyId: r.caller_key_id,
    userRef: r.user_ref === null ? null : asBuffer(r.user_ref),
    action: r.action,
    target: r.target,
    outcome: r.outcome,
    code: r.code,
    detail: r.detail,
    prevHash: asBuffer(r.prev_hash),
    hash: asBuffer(r.hash),
  }));
}

/** The stored hash of one row, or undefined when there is no such row. */
export async function findAuditHash(db: Kysely<Database>, seq: number): Promise<Buffer | undefined> {
  const row = await db.selectFrom("audit_events").select("hash").where("seq", "=", seq).executeTakeFirst();
  return row && asBuffer(row.hash);
}

/** Audit rows for the admin API, oldest first. `limit` is capped at MAX_AUDIT_QUERY_LIMIT. */
export async function queryAuditEvents(
  db: Kysely<Database>,
  query: AuditEventQuery,
): Promise<AuditEventView[]> {
  if (!Number.isSafeInteger(query.limit) || query.limit < 1) {
    throw new BrokerError("invalid_argument", "limit must be a positive integer");
  }
  let select = db
    .selectFrom("audit_events")
    .select([
      "seq",
      "occurred_at",
      "request_id",
      "caller_key_id",
      "user_ref",
      "action",
      "target",
      "outcome",
      "code",
      "detail",
    ])
    .orderBy("seq")
    .limit(Math.min(query.limit, MAX_AUDIT_QUERY_LIMIT));
  if (query.afterSeq !== undefined) select = select.where("seq", ">", query.afterSeq);
  if (query.userRef !== undefined) select = select.where("user_ref", "=", asBuffer(query.userRef));
  if (query.action !== undefined) select = select.where("action", "=", query.action);
  if (query.callerKeyId !== undefined) select = select.where("caller_key_id", "=", query.callerKeyId);
  if (query.since !== undefined) select = select.where("occurred_at", ">=", query.since);
  if (query.until !== undefined) select = select.where("occurred_at", "<", query.until);
  const rows = await select.execute();
  return rows.map((r) => ({
    seq: r.seq,
    occurredAt: r.occurred_at,
    requestId: r.request_id,
    callerKeyId: r.caller_key_id,
    userRef: r.user_ref === null ? null : asBuffer(r.user_ref).toString("hex"),
    action: r.action,
    target: r.target,
    outcome: r.outcome,
    code: r.code,
    detail: isPlainObject(r.detail) ? r.detail : {},
  }));
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
