import { invalidArgument } from "../errors.js";

/**
 * Keyset pagination over lists ordered by (created_at, id): a page token names the last row
 * shown, and the next page starts strictly after it, so rows added or deleted between pages
 * neither repeat nor shift the rest (an offset would do both).
 *
 * created_at travels as whole microseconds since the epoch, read and compared in SQL
 * (PAGE_CREATED_AT_MICROS, AFTER_POSITION): a JS Date keeps only milliseconds, and a row stamped
 * by the database's now() would otherwise be shown twice.
 */
export interface KeysetPosition {
  readonly createdAtMicros: number;
  readonly id: string;
}

export interface PageRequest {
  /** 0 for the list's default. */
  readonly pageSize: number;
  /** Empty for the first page. */
  readonly pageToken: string;
}

export interface PageLimits {
  readonly defaultSize: number;
  readonly maxSize: number;
}

/** The SQL expression to select as `created_at_micros` for the position of a row `alias`. */
export const createdAtMicros = (alias: string): string =>
  `(extract(epoch from ${alias}.created_at) * 1000000)::int8`;

// Tokens are opaque to clients but need no MAC: every list query is filtered on the caller's
// own rows (a user's secrets, or the operator's caller keys), so a forged token can only move
// within rows its holder may see anyway. They are still parsed strictly: a garbled or foreign
// token (another list's, another version's) is INVALID_ARGUMENT, never a database error.
const MAX_TOKEN_LENGTH = 128;
const BODY = /^([a-z])1\.(0|[1-9][0-9]{0,15})\.([A-Za-z0-9_-]{1,64})$/;

/** `kind` tells lists apart, so one list's token is refused by another. */
export function pageTokenOf(kind: string, position: KeysetPosition): string {
  return Buffer.from(`${kind}1.${position.createdAtMicros}.${position.id}`).toString("base64url");
}

export function positionOfPageToken(kind: string, token: string): KeysetPosition | undefined {
  if (token === "") return undefined;
  const match =
    token.length <= MAX_TOKEN_LENGTH && /^[A-Za-z0-9_-]+$/.test(token)
      ? BODY.exec(Buffer.from(token, "base64url").toString())
      : null;
  const micros = match?.[2] === undefined ? Number.NaN : Number(match[2]);
  if (match?.[1] !== kind || match[3] === undefined || !Number.isSafeInteger(micros)) {
    throw invalidArgument("page_token is not one this list issued");
  }
  return { createdAtMicros: micros, id: match[3] };
}

/** The page size to fetch: the default for 0, at most the maximum (larger values are clamped). */
export function pageSizeOf(request: PageRequest, limits: PageLimits): number {
  if (!Number.isSafeInteger(request.pageSize) || request.pageSize < 0) {
    throw invalidArgument("page_size must be a non-negative integer");
  }
  return request.pageSize === 0 ? limits.defaultSize : Math.min(request.pageSize, limits.maxSize);
}

/**
 * Cuts `rows` (fetched with limit size + 1, so whether more follow needs no count query) to one
 * page and the token of the next, empty when this is the last.
 */
export function pageOf<R extends { readonly createdAtMicros: number; readonly id: string }>(
  kind: string,
  rows: readonly R[],
  size: number,
): { readonly rows: readonly R[]; readonly nextPageToken: string } {
  const page = rows.slice(0, size);
  const last = page.at(-1);
  return {
    rows: page,
    nextPageToken: rows.length > size && last !== undefined ? pageTokenOf(kind, last) : "",
  };
}
