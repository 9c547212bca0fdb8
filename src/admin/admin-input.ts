import type { AuditEventQuery } from "../audit/audit-reader.js";
import { invalidArgument } from "../errors.js";

/** Input limits of the admin RPCs. Exported so tests and docs state the numbers the code enforces. */
export const ADMIN_LIMITS = {
  maxExpiryDays: 3650,
  maxSubjectChars: 256,
  /** Rows a QueryAudit returns when the caller gives no limit. */
  defaultAuditLimit: 100,
} as const;

const DAY_MS = 86_400_000;
const USER_REF_HEX = /^[0-9a-f]{64}$/;
const CALLER_KEY_ID = /^ck_[0-9a-f]{16}$/;
const AUDIT_ACTION = /^[a-z_]{1,32}\.[a-z_]{1,32}$/;
// Postgres timestamptz and JS Dates agree on years 1-9999; outside that the query fails (F51).
const MIN_TIME = Date.UTC(1, 0, 1);
const MAX_TIME = Date.UTC(9999, 11, 31);

export function parseCallerKeyId(id: string): string {
  if (!CALLER_KEY_ID.test(id))
    throw invalidArgument("id must be a caller key id (ck_ and 16 hex characters)");
  return id;
}

/** `expires_in_days` as an absolute expiry: 0 means the key never expires (null). */
export function parseCallerKeyExpiry(expiresInDays: number, now: Date): Date | null {
  if (expiresInDays > ADMIN_LIMITS.maxExpiryDays) {
    throw invalidArgument(`expires_in_days must be 0-${ADMIN_LIMITS.maxExpiryDays}`);
  }
  return expiresInDays === 0 ? null : new Date(now.getTime() + expiresInDays * DAY_MS);
}

/**
 * The user a ShredUser names: a user_ref as hex, or a subject under the configured issuer, which
 * `userRefOf` turns into its user_ref (the raw subject is used and forgotten).
 */
export function parseUserSelector(
  user:
    | { case: "userRef"; value: string }
    | { case: "subject"; value: string }
    | { case: undefined; value?: undefined },
  userRefOf: (subject: string) => Buffer,
): Buffer {
  if (user.case === "userRef" && USER_REF_HEX.test(user.value)) return Buffer.from(user.value, "hex");
  if (user.case === "subject" && user.value.length > 0 && user.value.length <= ADMIN_LIMITS.maxSubjectChars)
    return userRefOf(user.value);
  throw invalidArgument(
    `give user_ref (64 hex characters) or subject (1-${ADMIN_LIMITS.maxSubjectChars} characters)`,
  );
}

function parseTime(date: Date | undefined, name: string): Date | undefined {
  if (date === undefined) return undefined;
  const time = date.getTime();
  if (!Number.isFinite(time) || time < MIN_TIME || time > MAX_TIME)
    throw invalidArgument(`${name} must be between years 1 and 9999`);
  return date;
}

/** Validates a QueryAudit request; empty strings and zeros mean "no filter". */
export function parseAuditQuery(request: {
  limit: number;
  afterSeq: bigint;
  userRef: string;
  action: string;
  callerKeyId: string;
  since: Date | undefined;
  until: Date | undefined;
}): AuditEventQuery {
  if (request.userRef !== "" && !USER_REF_HEX.test(request.userRef)) {
    throw invalidArgument("user_ref must be 64 lowercase hex characters");
  }
  if (request.action !== "" && !AUDIT_ACTION.test(request.action))
    throw invalidArgument("action must look like secret.put");
  if (request.callerKeyId !== "") parseCallerKeyId(request.callerKeyId);
  if (request.afterSeq > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument("after_seq is out of range");
  const since = parseTime(request.since, "since");
  const until = parseTime(request.until, "until");
  return {
    limit: request.limit === 0 ? ADMIN_LIMITS.defaultAuditLimit : request.limit,
    ...(request.afterSeq === 0n ? {} : { afterSeq: Number(request.afterSeq) }),
    ...(request.userRef === "" ? {} : { userRef: Buffer.from(request.userRef, "hex") }),
    ...(request.action === "" ? {} : { action: request.action }),
    ...(request.callerKeyId === "" ? {} : { callerKeyId: request.callerKeyId }),
    ...(since === undefined ? {} : { since }),
    ...(until === undefined ? {} : { until }),
  };
}
