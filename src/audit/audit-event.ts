import type { BrokerErrorCode } from "../errors.js";

/**
 * The audit vocabulary: what the broker may report (actions, outcomes, detail keys). What an
 * event becomes in a row is audit-entry.ts; the bytes hashed into the chain are audit-encoding.ts.
 */

/** What happened. A closed list, so the trail can be queried by action without guessing spellings. */
export type AuditAction =
  | "secret.put"
  | "secret.get"
  | "secret.list"
  | "secret.delete"
  | "secret.uses"
  | "secret.inspect"
  | "proxy.call"
  | "auth.failure"
  | "caller_key.create"
  | "caller_key.revoke"
  | "caller_key.rotate"
  | "caller_key.suspend"
  | "caller_key.reinstate"
  | "misuse.signal"
  | "user.shred"
  | "rewrap.step"
  | "integrity.failure"
  | "session.end"
  | "pin.set"
  | "pin.unlock"
  | "oauth.connect_start"
  | "oauth.connect"
  | "oauth_app.set"
  | "oauth_app.rotate"
  // Issue 15: an OAuth connection's tokens renewed at the provider on use (a new version), and
  // a deleted connection's grant revoked at the provider (RFC 7009, best effort).
  | "secret.refresh"
  | "secret.revoke";

/**
 * `started` is written before a sensitive operation touches any key (Vault's request entry):
 * if it cannot be committed the operation does not run (I8). The final row follows.
 */
export const AUDIT_OUTCOMES = ["started", "ok", "denied", "error"] as const;
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number];

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
  /** How many items a step handled (e.g. data keys rewrapped), or a misuse signal's observed value. */
  readonly count?: number;
  /** A misuse signal's trailing baseline, in the unit of `count`. */
  readonly baseline?: number;
  /** A key inspection's verdict: none, ok, warned or refused. */
  readonly inspection?: string;
  /** Permission names an inspection found, comma-separated (names only, e.g. "read,withdraw"). */
  readonly permissions?: string;
  /** The dangerous ones among them, comma-separated. */
  readonly dangerousPermissions?: string;
  /** Credential fields redacted from the answer (redactResponseFields). */
  readonly redactions?: number;
  /** A proxied call's operation class, e.g. "transfer", or "unclassified" (SPEC I10). */
  readonly operationClass?: string;
  /** A secret's grant as stored, e.g. "read,trade" ("none" when empty). */
  readonly grant?: string;
  /** How a PutSecret's grant compares with the previous one: new, same, narrowed, widened. */
  readonly grantChange?: string;
  /** Where a logout came from: "backchannel", "rpc" or "self" (issue 14). */
  readonly source?: string;
  /** The ended session: its HMAC'd ref in hex (never the raw `sid`). */
  readonly sessionRef?: string;
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

/** The value types a detail may hold once sanitised. */
export type AuditDetailValue = string | number;
