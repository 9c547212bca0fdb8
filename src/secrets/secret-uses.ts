import type { Kysely } from "kysely";
import type { UserIdentity } from "../auth/identity.js";
import { invalidArgument } from "../errors.js";
import { listSecretUseRows } from "../store/audit.repository.js";
import type { Database } from "../store/schema.js";

/** One proxied call made with a secret, as its owner may see it (issue 13 item 8). */
export interface SecretUse {
  readonly at: Date;
  readonly operationClass: string;
  readonly method: string;
  /** 0 when the call was refused or failed before the upstream answered. */
  readonly upstreamStatus: number;
  readonly callerKeyName: string;
  readonly outcome: string;
  readonly code: string;
}

export interface SecretUsesPage {
  readonly uses: readonly SecretUse[];
  /** Empty when there is nothing older. */
  readonly nextPageToken: string;
}

export interface SecretUsesQuery {
  readonly secretId: string;
  /** 0 for the default. */
  readonly pageSize: number;
  /** Empty for the newest uses. */
  readonly pageToken: string;
}

export interface SecretUses {
  /** The user's own uses of one of their secrets, newest first; not_found if it is not theirs. */
  list(user: UserIdentity, query: SecretUsesQuery): Promise<SecretUsesPage>;
}

export const DEFAULT_USES_PAGE = 50;
export const MAX_USES_PAGE = 200;

// The token is the last seq shown, versioned. It needs no MAC: every query is filtered on the
// caller's own user ref and secret id, so a forged token can only move within rows the user may
// see anyway. It is still checked strictly, so a garbled one is a clear INVALID_ARGUMENT.
const TOKEN = /^u1\.([1-9][0-9]{0,15})$/;

export function pageTokenOf(seq: number): string {
  return Buffer.from(`u1.${seq}`).toString("base64url");
}

function seqOfPageToken(token: string): number | undefined {
  if (token === "") return undefined;
  const match = token.length <= 32 ? TOKEN.exec(Buffer.from(token, "base64url").toString()) : null;
  const seq = match?.[1] === undefined ? Number.NaN : Number(match[1]);
  if (!Number.isSafeInteger(seq)) throw invalidArgument("page_token is not one this service issued");
  return seq;
}

/**
 * Reads a secret's uses from the audit trail: the outcome row of each proxied call (the started
 * row only says a call began). `owns` proves the secret is the user's first, with the same
 * NOT_FOUND as every other secret RPC (I4); `flush` commits this replica's pending outcome rows
 * so a use it already answered for is listed.
 */
export function createSecretUses(deps: {
  db: Kysely<Database>;
  owns: (user: UserIdentity, secretId: string) => Promise<void>;
  flush: () => Promise<void>;
}): SecretUses {
  return {
    async list(user, query) {
      const beforeSeq = seqOfPageToken(query.pageToken);
      const size = query.pageSize === 0 ? DEFAULT_USES_PAGE : Math.min(query.pageSize, MAX_USES_PAGE);
      await deps.owns(user, query.secretId);
      await deps.flush();
      // One row more than asked: whether there is an older page, without a count query.
      const rows = await listSecretUseRows(deps.db, {
        userRef: user.userRef,
        secretId: query.secretId,
        beforeSeq,
        limit: size + 1,
      });
      const page = rows.slice(0, size);
      const last = page.at(-1);
      return {
        uses: page.map((r) => ({
          at: r.occurredAt,
          operationClass: text(r.detail.operationClass),
          method: text(r.detail.method),
          upstreamStatus: typeof r.detail.upstreamStatus === "number" ? r.detail.upstreamStatus : 0,
          callerKeyName: r.callerKeyName ?? "",
          outcome: r.outcome,
          code: r.code ?? "",
        })),
        nextPageToken: rows.length > size && last !== undefined ? pageTokenOf(last.seq) : "",
      };
    },
  };
}

const text = (value: unknown): string => (typeof value === "string" ? value : "");
