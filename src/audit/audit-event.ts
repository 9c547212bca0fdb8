import { lengthPrefixed } from "../crypto/canonical-encoding.js";
import { BrokerError, type BrokerErrorCode } from "../errors.js";

/** What happened. A closed list, so the trail can be queried by action without guessing spellings. */
export type AuditAction =
  | "secret.put"
  | "secret.get"
  | "secret.list"
  | "secret.delete"
  | "proxy.call"
  | "auth.failure"
  | "caller_key.create"
  | "caller_key.revoke"
  | "caller_key.rotate"
  | "user.shred"
  | "rewrap.step"
  | "integrity.failure";

/**
 * `started` is written before a sensitive operation touches any key (Vault's request entry):
 * if it cannot be committed the operation does not run (I8). The final row follows.
 */
export type AuditOutcome = "started" | "ok" | "denied" | "error";

/**
 * The only facts an audit row may carry beyond its columns. Keys are a fixed list and each value
 * has a shape (see DETAIL_RULES): nothing free-form fits, so request bodies, headers, query values
 * or labels cannot be stored by accident, and a value that fails its shape is dropped.
 */
export interface AuditDetail {
  /** Provider id from the registry, e.g. "binance". */
  readonly provider?: string;
  /** Upstream HTTP method, e.g. "POST". */
  readonly method?: string;
  /** The registry's path template, e.g. "/api/v3/order" — never the concrete path or its query. */
  readonly pathTemplate?: string;
  readonly upstreamStatus?: number;
  readonly durationMs?: number;
  readonly secretVersion?: number;
  readonly fieldCount?: number;
  /** A caller scope, e.g. "proxy:call". */
  readonly scope?: string;
  /** A stable machine reason, e.g. "token_expired". */
  readonly reason?: string;
  /** KMS key id or ARN, or a local keyring key id. */
  readonly masterKeyId?: string;
  readonly dataKeyVersion?: number;
  /** How many items a step handled (e.g. data keys rewrapped). */
  readonly count?: number;
}

/** One event as the broker reports it; `record` stamps the time and the chain assigns `seq`. */
export interface AuditEvent {
  readonly requestId: string;
  readonly action: AuditAction;
  readonly outcome: AuditOutcome;
  readonly callerKeyId?: string | null | undefined;
  /** The user's 32-byte HMAC'd ref (SPEC I5), never a `sub` or an email. */
  readonly userRef?: Uint8Array | null | undefined;
  /** Secret id or caller key id the event is about. */
  readonly target?: string | null | undefined;
  readonly code?: BrokerErrorCode | null | undefined;
  readonly detail?: AuditDetail | undefined;
}

export type AuditDetailValue = string | number;

/**
 * An audit row's content, everything but `seq` and the hashes: sanitised on the way in, or as
 * read back from the database (where a tampered row may hold anything, hence the loose types).
 */
export interface AuditEntry {
  readonly occurredAt: Date;
  readonly requestId: string;
  readonly callerKeyId: string | null;
  readonly userRef: Buffer | null;
  readonly action: string;
  readonly target: string | null;
  readonly outcome: string;
  readonly code: string | null;
  /** A flat map of strings and integers when written; whatever the jsonb holds when read back. */
  readonly detail: unknown;
}

/** Marks a value that was removed because it did not fit its shape or looked like a credential. */
export const DROPPED = "[dropped]";

const USER_REF_BYTES = 32;
const ACTION = /^[a-z_]{1,32}\.[a-z_]{1,32}$/;
const OUTCOMES: ReadonlySet<string> = new Set<AuditOutcome>(["started", "ok", "denied", "error"]);
const CODE = /^[a-z_]{1,32}$/;
const MAX_ID_CHARS = 128;
const MAX_TARGET_CHARS = 256;

type DetailRule = (value: unknown) => AuditDetailValue | undefined;

const IDENTIFIER = /^[a-z0-9][a-z0-9_.:-]{0,63}$/;
const METHOD = /^[A-Z]{1,16}$/;
const PATH_TEMPLATE = /^\/[A-Za-z0-9_.~{}/-]{0,255}$/;
const KEY_ID = /^[A-Za-z0-9_.:/-]{1,256}$/;

function shaped(pattern: RegExp, screen = false): DetailRule {
  return (value) =>
    typeof value === "string" && pattern.test(value) && !(screen && looksLikeCredential(value))
      ? value
      : undefined;
}

function count(value: unknown): number | undefined {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

const DETAIL_RULES: { readonly [K in keyof Required<AuditDetail>]: DetailRule } = {
  // Lower-case only: API keys and tokens are mixed-case, so one passed here by mistake fails.
  provider: shaped(IDENTIFIER),
  method: shaped(METHOD),
  pathTemplate: shaped(PATH_TEMPLATE, true),
  upstreamStatus: (v) => {
    const n = count(v);
    return n !== undefined && n >= 100 && n <= 599 ? n : undefined;
  },
  durationMs: count,
  secretVersion: count,
  fieldCount: count,
  scope: shaped(IDENTIFIER),
  reason: shaped(IDENTIFIER),
  masterKeyId: shaped(KEY_ID, true),
  dataKeyVersion: count,
  count,
};

function isDetailKey(key: string): key is keyof AuditDetail {
  return Object.hasOwn(DETAIL_RULES, key);
}

// A run of 20+ letters and digits mixing both, a JWT/base64-JSON opening, or a broker caller
// key. A backstop for values that fit a shape anyway: uuids, ck_ ids and ARNs have no such run.
const CREDENTIAL_RUN = /[A-Za-z0-9]{20,}/g;
const CREDENTIAL_MARKERS = /eyJ[A-Za-z0-9_-]{8,}|kbk_[A-Za-z0-9]{8,}/;

/** True when a string holds something shaped like a secret or a token. */
export function looksLikeCredential(value: string): boolean {
  if (CREDENTIAL_MARKERS.test(value)) return true;
  for (const [run] of value.matchAll(CREDENTIAL_RUN)) {
    if (/[0-9]/.test(run) && /[A-Za-z]/.test(run)) return true;
  }
  return false;
}

const SURROGATE = /[\ud800-\udfff]/;

// C0 and C1 controls (incl. NEL), DEL, line/paragraph separators, bidi overrides and isolates,
// zero-width and BOM: anything that could start a fake line or disguise text when displayed.
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const UNSAFE_CHARS = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\\]/g;

/**
 * Caller-influenced text made safe to store and to print one entry per line: controls become
 * visible `\uXXXX` escapes (and `\` becomes `\\`, so the escaping is reversible and cannot be
 * faked), lone surrogates become U+FFFD, and the result is capped.
 */
export function escapeAuditText(value: string, maxChars: number): string {
  // A UTF-8 round trip turns lone surrogates into U+FFFD; without any surrogate it changes nothing.
  const wellFormed = SURROGATE.test(value) ? Buffer.from(value, "utf8").toString("utf8") : value;
  const escaped = wellFormed.replace(UNSAFE_CHARS, (c) =>
    c === "\\" ? "\\\\" : `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
  if (escaped.length <= maxChars) return escaped;
  // Cut on a code point boundary; "…" tells a reader the value was longer.
  const points = Array.from(escaped);
  let out = "";
  for (const point of points) {
    if (out.length + point.length > maxChars - 1) break;
    out += point;
  }
  return `${out}…`;
}

function safeText(value: string, maxChars: number): string {
  return looksLikeCredential(value) ? DROPPED : escapeAuditText(value, maxChars);
}

function safeOptionalText(value: string | null | undefined, maxChars: number): string | null {
  return value === null || value === undefined ? null : safeText(value, maxChars);
}

/** Keeps allowlisted keys whose value fits its shape; anything else is dropped. */
export function sanitizeAuditDetail(detail: AuditDetail | undefined): Record<string, AuditDetailValue> {
  const out: Record<string, AuditDetailValue> = {};
  if (detail === undefined) return out;
  // Object.entries also sees keys a cast smuggled past the type: they are dropped, not stored.
  for (const [key, value] of Object.entries(detail)) {
    if (value === undefined || !isDetailKey(key)) continue;
    out[key] = DETAIL_RULES[key](value) ?? DROPPED;
  }
  return out;
}

/**
 * Turns a reported event into the row content that is hashed and stored. Throws `internal` for a
 * user ref that is not a 32-byte HMAC: storing anything else could put a raw user id in the trail.
 */
export function toAuditEntry(event: AuditEvent, occurredAt: Date): AuditEntry {
  if (Number.isNaN(occurredAt.getTime()))
    throw new BrokerError("internal", "audit clock returned an invalid date");
  // The unions are compile-time only; a bad value from untyped code must not reach the trail.
  if (!ACTION.test(event.action) || !OUTCOMES.has(event.outcome) || !CODE.test(event.code ?? "none")) {
    throw new BrokerError("internal", "malformed audit event");
  }
  const userRef = event.userRef ?? null;
  if (userRef !== null && userRef.length !== USER_REF_BYTES) {
    throw new BrokerError("internal", "audit user ref must be a 32-byte HMAC");
  }
  return {
    occurredAt,
    requestId: safeText(event.requestId, MAX_ID_CHARS),
    callerKeyId: safeOptionalText(event.callerKeyId, MAX_ID_CHARS),
    userRef: userRef === null ? null : Buffer.from(userRef),
    action: event.action,
    target: safeOptionalText(event.target, MAX_TARGET_CHARS),
    outcome: event.outcome,
    code: event.code ?? null,
    detail: sanitizeAuditDetail(event.detail),
  };
}

const ENCODING_LABEL = "keybroker/audit/v1";

// Encoded as the bytes 0x00 (absent) or 0x01 followed by the value: for text, a one-character
// prefix on the string gives exactly those UTF-8 bytes without a buffer of its own.
const ABSENT = "\u0000";
const PRESENT = "\u0001";

function optional(value: string | Uint8Array | null): string | Buffer {
  if (value === null) return ABSENT;
  if (typeof value === "string") return PRESENT + value;
  const out = Buffer.alloc(1 + value.byteLength);
  out[0] = 1;
  out.set(value, 1);
  return out;
}

function uint64(value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigUInt64BE(BigInt(value));
  return out;
}

function int64(value: number): Buffer {
  const out = Buffer.alloc(8);
  out.writeBigInt64BE(BigInt(value));
  return out;
}

// Values are tagged by type, so the string "1" and the number 1 encode differently. Stored rows
// only hold strings and integers; other JSON (from a tampered row) still encodes deterministically.
function encodeDetailValue(value: unknown): string {
  if (typeof value === "string") return `s${value}`;
  if (typeof value === "number") return `n${String(value)}`;
  return `j${JSON.stringify(value)}`;
}

function encodeDetail(detail: unknown): Buffer {
  // Only a tampered row holds anything but a map; it still needs a deterministic, distinct encoding.
  if (typeof detail !== "object" || detail === null || Array.isArray(detail)) {
    return Buffer.from(`x${JSON.stringify(detail) ?? "undefined"}`, "utf8");
  }
  const entries = Object.entries(detail);
  // jsonb reorders keys, so the encoding sorts them (by their UTF-8 bytes) rather than trusting
  // insertion order. Without surrogates (the usual case), UTF-16 code-unit order is code-point
  // order, which is UTF-8 byte order, so the plain string comparison gives the same result.
  if (!entries.some(([k]) => SURROGATE.test(k))) entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  else entries.sort(([a], [b]) => Buffer.compare(Buffer.from(a, "utf8"), Buffer.from(b, "utf8")));
  const head = Buffer.alloc(5);
  head.write("o", 0, "latin1");
  head.writeUInt32BE(entries.length, 1);
  // "o", the count, then each key and tagged value length-prefixed, one after the other.
  return Buffer.concat([head, lengthPrefixed(...entries.flatMap(([k, v]) => [k, encodeDetailValue(v)]))]);
}

/**
 * The canonical bytes of a row, every column but the hashes: length-prefixed parts, nulls told
 * apart from empty strings, so no two different rows encode alike whatever text they hold.
 */
export function encodeAuditEntry(seq: number, entry: AuditEntry): Buffer {
  return lengthPrefixed(
    ENCODING_LABEL,
    uint64(seq),
    int64(entry.occurredAt.getTime()),
    entry.requestId,
    optional(entry.callerKeyId),
    optional(entry.userRef),
    entry.action,
    optional(entry.target),
    entry.outcome,
    optional(entry.code),
    encodeDetail(entry.detail),
  );
}
