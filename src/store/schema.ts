import type { ColumnType, Generated, Insertable, Selectable } from "kysely";

/** Row types, mirroring migrations/. Only `timestamptz` is used, so Dates are UTC instants. */
type Timestamp = ColumnType<Date, Date | undefined, Date>;

export interface BrokerStateTable {
  name: string;
  wrapped_value: Uint8Array;
  master_key_id: string;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface CallerKeysTable {
  id: string;
  name: string;
  key_hash: Uint8Array;
  last4: string;
  scopes: string[];
  created_at: Generated<Date>;
  expires_at: Date | null;
  revoked_at: Date | null;
  last_used_at: Date | null;
  /** SHA-256 of the DER client certificate the key is bound to (mTLS), or null if unbound. */
  client_cert_sha256: Uint8Array | null;
  /** Set when a misuse signal suspended the key (refused like a revoked one until reinstated). */
  suspended_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  suspended_reason: ColumnType<string | null, string | null | undefined, string | null>;
}

export interface UsersTable {
  user_ref: Uint8Array;
  wrapped_data_key: Uint8Array;
  master_key_id: string;
  data_key_version: Generated<number>;
  encryptions: ColumnType<number, number | undefined, number>;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

export interface SecretsTable {
  id: string;
  user_ref: Uint8Array;
  provider: string;
  label: string;
  current_version: number;
  /** HMAC under the user's data key pinning current_version (catalogue L1); null: written before it. */
  head_mac: ColumnType<Uint8Array | null, Uint8Array | null | undefined, Uint8Array | null>;
  /** Sorted operation classes, bound by a v2 head (issue 13); null: stored before grants. */
  operation_grant: ColumnType<string[] | null, string[] | null | undefined, string[] | null>;
  created_at: Timestamp;
  updated_at: Timestamp;
  last_used_at: Date | null;
  /** Migration 0008: the last key inspection's verdict, permissions found and time (names only). */
  inspection_verdict: ColumnType<string, string | undefined, string>;
  inspection_permissions: ColumnType<string[], string[] | undefined, string[]>;
  inspection_dangerous: ColumnType<string[], string[] | undefined, string[]>;
  inspected_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  /** Migration 0014 (issue 15): an OAuth connection's state; all null for other secrets. */
  oauth_status: ColumnType<OAuthStatus | null, OAuthStatus | null | undefined, OAuthStatus | null>;
  oauth_expires_at: ColumnType<Date | null, Date | null | undefined, Date | null>;
  oauth_scopes: ColumnType<string[] | null, string[] | null | undefined, string[] | null>;
  oauth_refresh_lease_until: ColumnType<Date | null, Date | null | undefined, Date | null>;
}

/** An OAuth connection's state: usable, or the user must consent again (invalid_grant). */
export type OAuthStatus = "active" | "needs_reconsent";

export interface SecretVersionsTable {
  secret_id: string;
  version: number;
  ciphertext: Uint8Array;
  hint_ciphertext: Uint8Array;
  fingerprint: string;
  field_names: string[];
  created_at: Timestamp;
}

export interface AuditEventsTable {
  seq: number;
  occurred_at: Date;
  request_id: string;
  caller_key_id: string | null;
  user_ref: Uint8Array | null;
  action: string;
  target: string | null;
  outcome: string;
  code: string | null;
  /** jsonb: both drivers parse it on read; written as JSON text so neither re-encodes it. */
  detail: ColumnType<unknown, string, string>;
  prev_hash: Uint8Array;
  hash: Uint8Array;
}

export interface AuditChainHeadTable {
  id: number;
  last_seq: number;
  last_hash: Uint8Array;
}

/** M1: a signed checkpoint of the audit chain (audit-checkpoints.repository.ts). */
export interface AuditCheckpointsTable {
  seq: number;
  chain_hash: Uint8Array;
  signed_at: Date;
  key_id: string;
  mac: Uint8Array;
}

/** F1: the last nonce signed per secret, shared by every replica (outbound-nonces.repository.ts). */
export interface OutboundNoncesTable {
  secret_id: string;
  last_nonce: number;
}

/** Issue 14: tokens of a user or session issued at or before `revoked_before` are refused. */
export interface SessionRevocationsTable {
  subject_kind: "user" | "session";
  /** The user ref, or the HMAC'd session id: never a raw `sub` or `sid`. */
  subject_ref: Uint8Array;
  /** Epoch seconds. */
  revoked_before: number;
  updated_at: Generated<Date>;
}

/** Issue 14: logout tokens already accepted, by SHA-256 of (iss, jti). */
export interface LogoutTokenIdsTable {
  id_hash: Uint8Array;
  expires_at: Date;
}

/** Issue 14: DPoP proofs already accepted, by SHA-256 of (key thumbprint, jti). */
export interface DpopProofIdsTable {
  id_hash: Uint8Array;
  expires_at: Date;
}

/** Rate-limit token leases shared by every replica, one row per bucket and fixed window. */
export interface RateLimitLeasesTable {
  bucket: string;
  window_start: number;
  used: number;
  last_grant: number;
}

/** Wrong-PIN attempts per user, shared by every replica (issue 14 item 4). */
export interface UserPinAttemptsTable {
  user_ref: Uint8Array;
  failed_attempts: number;
  locked_until: Date;
  updated_at: Timestamp;
}

/** The broker's OAuth client registration per provider (issue 15 item 2); the secret is sealed. */
export interface OAuthAppsTable {
  provider: string;
  version: number;
  client_id: string;
  wrapped_key: Uint8Array;
  master_key_id: string;
  secret_ciphertext: Uint8Array;
  created_at: Generated<Date>;
  updated_at: Generated<Date>;
}

/** A pending authorization (StartConnection → callback), keyed by SHA-256 of its `state`. */
export interface OAuthAuthorizationsTable {
  state_hash: Uint8Array;
  user_ref: Uint8Array;
  session_ref: Uint8Array | null;
  /** Epoch seconds (int8). */
  token_issued_at: number | null;
  token_expires_at: number;
  caller_key_id: string;
  provider: string;
  scopes: string[];
  return_url: string;
  secret_id: string | null;
  label: string | null;
  wrapped_key: Uint8Array;
  master_key_id: string;
  verifier_ciphertext: Uint8Array;
  created_at: Generated<Date>;
  expires_at: Date;
}

export interface Database {
  broker_state: BrokerStateTable;
  caller_keys: CallerKeysTable;
  users: UsersTable;
  secrets: SecretsTable;
  secret_versions: SecretVersionsTable;
  audit_events: AuditEventsTable;
  audit_chain_head: AuditChainHeadTable;
  audit_checkpoints: AuditCheckpointsTable;
  outbound_nonces: OutboundNoncesTable;
  session_revocations: SessionRevocationsTable;
  logout_token_ids: LogoutTokenIdsTable;
  dpop_proof_ids: DpopProofIdsTable;
  rate_limit_leases: RateLimitLeasesTable;
  user_pin_attempts: UserPinAttemptsTable;
  oauth_apps: OAuthAppsTable;
  oauth_authorizations: OAuthAuthorizationsTable;
}

export type CallerKeyRow = Selectable<CallerKeysTable>;
export type NewCallerKeyRow = Insertable<CallerKeysTable>;
export type UserRow = Selectable<UsersTable>;
export type SecretRow = Selectable<SecretsTable>;
export type SecretVersionRow = Selectable<SecretVersionsTable>;
