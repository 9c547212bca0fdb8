import { BrokerError } from "../errors.js";
import type { StoredAuditRow } from "../store/audit.repository.js";
import { AUDIT_OUTCOMES, type AuditDetail, type AuditDetailValue, type AuditEvent } from "./audit-event.js";

/**
 * An audit row's content, everything but `seq` and the hashes: sanitised on the way in, or as
 * read back from the database (where a tampered row may hold anything, hence the loose types).
 */
export type AuditEntry = Omit<StoredAuditRow, "seq" | "prevHash" | "hash">;

/** Marks a value that was removed because it did not fit its shape or looked like a credential. */
export const DROPPED = "[dropped]";

const USER_REF_BYTES = 32;
const ACTION = /^[a-z_]{1,32}\.[a-z_]{1,32}$/;
const OUTCOMES: ReadonlySet<string> = new Set(AUDIT_OUTCOMES);
const CODE = /^[a-z_]{1,32}$/;
const MAX_ID_CHARS = 128;
const MAX_TARGET_CHARS = 256;

type DetailRule = (value: unknown) => AuditDetailValue | undefined;

const IDENTIFIER = /^[a-z0-9][a-z0-9_.:-]{0,63}$/;
const METHOD = /^[A-Z]{1,16}$/;
const PATH_TEMPLATE = /^\/[A-Za-z0-9_.~{}/-]{0,255}$/;
const KEY_ID = /^[A-Za-z0-9_.:/-]{1,256}$/;
const NAME_LIST = /^[a-z0-9][a-z0-9_:,-]{0,1023}$/;
const CLASS_NAME = /^[a-z]{1,32}$/;
const CLASS_LIST = /^[a-z]{1,32}(,[a-z]{1,32}){0,15}$/;
// One scope, or the alternatives a call accepts ("proxy:call|proxy:read|...").
const SCOPES = /^[a-z0-9][a-z0-9_.:-]{0,63}(\|[a-z0-9][a-z0-9_.:-]{0,63}){0,15}$/;

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
  scope: shaped(SCOPES),
  reason: shaped(IDENTIFIER),
  masterKeyId: shaped(KEY_ID, true),
  dataKeyVersion: count,
  count,
  baseline: count,
  inspection: shaped(IDENTIFIER),
  permissions: shaped(NAME_LIST, true),
  dangerousPermissions: shaped(NAME_LIST, true),
  redactions: count,
  operationClass: shaped(CLASS_NAME),
  grant: shaped(CLASS_LIST),
  grantChange: shaped(CLASS_NAME),
  source: shaped(IDENTIFIER),
  sessionRef: shaped(/^[0-9a-f]{64}$/),
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

/** True when `value` holds any UTF-16 surrogate (paired or not); false for most text, cheaply. */
export function hasSurrogate(value: string): boolean {
  return SURROGATE.test(value);
}

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
  const wellFormed = hasSurrogate(value) ? Buffer.from(value, "utf8").toString("utf8") : value;
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
