import type { Kysely } from "kysely";
import { BrokerError } from "../errors.js";
import { asBuffer } from "./bytes.js";
import type { PreparedRunner, PreparedStatement } from "./prepared.js";
import type { Database } from "./schema.js";
import {
  type SecretForUse,
  type SecretForUseKey,
  type SecretForUseRow,
  secretsForUseById,
  secretsForUseParams,
  secretsForUseQuery,
} from "./secrets.repository.js";

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
  /** The sanitised detail map (a flat object of strings and integers). */
  readonly detail: unknown;
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

const LOCK_HEAD: PreparedStatement = {
  name: "kb_audit_lock_head",
  text: `select last_seq, last_hash from audit_chain_head where id = ${HEAD_ID} for update`,
};

const CREATE_HEAD: PreparedStatement = {
  name: "kb_audit_create_head",
  text: `insert into audit_chain_head (id, last_seq, last_hash) values (${HEAD_ID}, 0, $1) on conflict (id) do nothing`,
};

// One statement, so one round trip and its own transaction: the head moves only if it is still
// where this writer believes it is ($1, $2), and the rows are inserted only if the head moved.
// A concurrent writer's update makes this one wait on the head's row lock, then re-check the
// WHERE against the committed head and match nothing, so two writers never fork the chain.
// Rows travel as one jsonb array: the same text on pg and PGlite, whatever the batch size.
// $6 names caller keys that must still be live (not revoked, suspended or expired) for the batch
// to commit: a sensitive call's `started` row doubles as its caller key's revocation check
// (catalogue B20, issue 17 item 2). Any dead key among them and nothing is written; the ids come
// back so the writer refuses those calls and appends the rest again.
// $7/$8 name (user, secret) pairs the batch's proxied calls are about to use: the statement that
// commits their `started` rows also reads those sealed rows (only if it appended), so a proxied
// call costs one round trip, the audited commit (issue 17 item 2). The read sees the same
// snapshot as the caller-key check; nothing in it is decrypted before the commit returns (I8).
const APPEND_IF_HEAD: PreparedStatement = {
  name: "kb_audit_append_if_head_live_read",
  text: `
    with dead as (
      select k.id from unnest($6::text[]) as k(id)
       where not exists (
         select from caller_keys c
          where c.id = k.id and c.revoked_at is null and c.suspended_at is null
            and (c.expires_at is null or c.expires_at > statement_timestamp()))
    ), moved as (
      update audit_chain_head set last_seq = $3, last_hash = $4
       where id = ${HEAD_ID} and last_seq = $1 and last_hash = $2 and not exists (select from dead)
      returning 1
    ), appended as (
      insert into audit_events (seq, occurred_at, request_id, caller_key_id, user_ref, action, target,
                                outcome, code, detail, prev_hash, hash)
      select r.seq, r.occurred_at, r.request_id, r.caller_key_id, decode(r.user_ref, 'hex'), r.action,
             r.target, r.outcome, r.code, r.detail, decode(r.prev_hash, 'hex'), decode(r.hash, 'hex')
        from jsonb_to_recordset($5::jsonb) as r(seq bigint, occurred_at timestamptz, request_id text,
             caller_key_id text, user_ref text, action text, target text, outcome text, code text,
             detail jsonb, prev_hash text, hash text)
       where exists (select from moved)
      returning 1
    ), fetched as (
      select * from (${secretsForUseQuery("$7", "$8")}) f where exists (select from moved)
    ), outcome as (
      select (select count(*)::int from appended) as appended,
             coalesce((select array_agg(id) from dead), '{}'::text[]) as dead
    )
    select outcome.appended, outcome.dead, fetched.* from outcome left join fetched on true`,
};

/**
 * Locks the chain head for the rest of the transaction; concurrent appenders, in this process or
 * another replica, queue here, which is what keeps the chain linear. Recreates a missing head
 * (an emptied table) at `genesisHash`; against surviving rows the next insert then fails on the
 * seq key, so the trail stops rather than forking.
 */
export async function lockAuditChainHead(
  tx: PreparedRunner,
  genesisHash: Uint8Array,
): Promise<AuditChainHead> {
  type HeadRow = { last_seq: number; last_hash: Uint8Array };
  let [row] = await tx.rows<HeadRow>(LOCK_HEAD, []);
  if (row === undefined) {
    await tx.rows(CREATE_HEAD, [asBuffer(genesisHash)]);
    [row] = await tx.rows<HeadRow>(LOCK_HEAD, []);
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

const hex = (bytes: Uint8Array | null): string | null =>
  bytes === null ? null : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");

/**
 * What an append did: wrote every row (and read the secrets asked for, by `forUseId`: an absent
 * pair, or another user's secret, is not in the map), found the head elsewhere, or refused dead
 * caller keys.
 */
export type AppendResult =
  | { readonly kind: "appended"; readonly secrets: ReadonlyMap<string, SecretForUse> }
  | { readonly kind: "head_moved" }
  | { readonly kind: "dead_caller_keys"; readonly ids: readonly string[] };

const NOTHING_READ: ReadonlyMap<string, SecretForUse> = new Map();

/**
 * Appends `rows` (consecutive, chained from `expected`) and moves the head to the last one, in one
 * statement, if and only if the head is still `expected` and every caller key in `liveCallerKeys`
 * is live; when it does, the same statement reads the sealed secrets `reads` names (each must be
 * a uuid: see `canNameSecret`). `head_moved` means another writer moved it first and nothing was
 * written: read the head again (under its lock) and re-chain. `dead_caller_keys`: nothing was
 * written either.
 */
export async function appendAuditRowsIfHead(
  runner: PreparedRunner,
  expected: AuditChainHead,
  rows: readonly NewAuditRow[],
  liveCallerKeys: readonly string[] = [],
  reads: readonly SecretForUseKey[] = [],
): Promise<AppendResult> {
  const last = rows.at(-1);
  if (last === undefined) return { kind: "appended", secrets: NOTHING_READ };
  const json = JSON.stringify(
    rows.map((r) => ({
      seq: r.seq,
      occurred_at: r.occurredAt.toISOString(),
      request_id: r.requestId,
      caller_key_id: r.callerKeyId,
      user_ref: hex(r.userRef),
      action: r.action,
      target: r.target,
      outcome: r.outcome,
      code: r.code,
      detail: r.detail,
      prev_hash: hex(r.prevHash),
      hash: hex(r.hash),
    })),
  );
  const results = await runner.rows<{ appended: number; dead: string[] } & SecretForUseRow>(APPEND_IF_HEAD, [
    expected.lastSeq,
    expected.lastHash,
    last.seq,
    asBuffer(last.hash),
    json,
    [...liveCallerKeys],
    ...secretsForUseParams(reads),
  ]);
  const [result] = results;
  if (result === undefined || (result.appended !== 0 && result.appended !== rows.length)) {
    throw new BrokerError("internal", "audit append wrote a partial batch");
  }
  if (result.dead.length > 0) return { kind: "dead_caller_keys", ids: result.dead };
  if (result.appended !== rows.length) return { kind: "head_moved" };
  return { kind: "appended", secrets: reads.length === 0 ? NOTHING_READ : secretsForUseById(results) };
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

/** One proxied use of a secret, from its outcome row (for the secret's owner). */
export interface SecretUseRow {
  readonly seq: number;
  readonly occurredAt: Date;
  readonly outcome: string;
  readonly code: string | null;
  readonly detail: Readonly<Record<string, unknown>>;
  /** The caller key's name, if the key still exists. */
  readonly callerKeyName: string | null;
}

/**
 * The outcome rows of `userRef`'s proxied calls with `secretId`, newest first, below `beforeSeq`.
 * Filtered on the user's own ref (the user_ref index), so no other user's row can ever match (I4).
 */
export async function listSecretUseRows(
  db: Kysely<Database>,
  query: { userRef: Uint8Array; secretId: string; beforeSeq: number | undefined; limit: number },
): Promise<SecretUseRow[]> {
  let select = db
    .selectFrom("audit_events as e")
    .leftJoin("caller_keys as k", "k.id", "e.caller_key_id")
    .select(["e.seq", "e.occurred_at", "e.outcome", "e.code", "e.detail", "k.name"])
    .where("e.user_ref", "=", asBuffer(query.userRef))
    .where("e.target", "=", query.secretId)
    .where("e.action", "=", "proxy.call")
    .where("e.outcome", "<>", "started")
    .orderBy("e.seq", "desc")
    .limit(Math.min(query.limit, MAX_AUDIT_QUERY_LIMIT));
  if (query.beforeSeq !== undefined) select = select.where("e.seq", "<", query.beforeSeq);
  const rows = await select.execute();
  return rows.map((r) => ({
    seq: r.seq,
    occurredAt: r.occurred_at,
    outcome: r.outcome,
    code: r.code,
    detail: isPlainObject(r.detail) ? r.detail : {},
    callerKeyName: r.name,
  }));
}
