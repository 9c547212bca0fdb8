import { BrokerError } from "../errors.js";

/**
 * Whether an error means "the database is unreachable right now" rather than "this query is
 * wrong": the caller should get UNAVAILABLE (retry later), not INTERNAL. Covers both drivers:
 * SQLSTATE class 08 (connection exception), 57P01-57P03 (admin shutdown, crash shutdown,
 * cannot connect now), 53300 (too many connections), socket errors, and pg / pg-pool messages
 * for a dropped connection or an exhausted pool.
 */
// 57014: statement timeout (KEYBROKER_DB_STATEMENT_TIMEOUT_MS) — the database is too slow or locked now.
const UNAVAILABLE_STATES = new Set(["57P01", "57P02", "57P03", "53300", "57014"]);
const UNAVAILABLE_ERRNOS = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH"]);
const UNAVAILABLE_MESSAGES = [
  "Connection terminated",
  "connection error and is not queryable",
  "timeout exceeded when trying to connect",
  "Client was closed and is not queryable",
  "Cannot use a pool after calling end",
];

export function isDatabaseUnavailable(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const { code, message } = err as { code?: unknown; message?: unknown };
  if (
    typeof code === "string" &&
    (code.startsWith("08") || UNAVAILABLE_STATES.has(code) || UNAVAILABLE_ERRNOS.has(code))
  ) {
    return true;
  }
  return typeof message === "string" && UNAVAILABLE_MESSAGES.some((m) => message.includes(m));
}

/**
 * What the store throws for a driver error: BrokerError "unavailable" for an outage (the real
 * error kept as `cause` for the logs), anything else unchanged, so callers still see SQLSTATEs
 * such as 23505 (isUniqueViolation) and their own errors as they threw them.
 */
export function toStoreError(err: unknown): unknown {
  if (err instanceof BrokerError || !isDatabaseUnavailable(err)) return err;
  return new BrokerError("unavailable", "database unavailable", { cause: err });
}
