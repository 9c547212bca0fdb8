import { randomBytes } from "node:crypto";
import type { Kysely } from "kysely";
import { generateCallerKey } from "../auth/caller-key-format.js";
import { type CallerScope, isCallerScope } from "../auth/identity.js";
import { BrokerError } from "../errors.js";
import {
  CALLER_KEYS_PAGE_KIND,
  type CallerKeySummary,
  expireCallerKeyBy,
  findCallerKeyById,
  insertCallerKey,
  listCallerKeys,
  listCallerKeysPage,
  reinstateCallerKey,
  revokeCallerKey,
} from "../store/caller-keys.repository.js";
import { type PageLimits, type PageRequest, pageSizeOf, positionOfPageToken } from "../store/keyset-page.js";
import type { Database } from "../store/schema.js";

export type { CallerKeySummary } from "../store/caller-keys.repository.js";

const NAME = /^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$/;
const SHA256_BYTES = 32;

export interface CreatedCallerKey {
  /** The key itself: shown once, never stored (only its hash is). */
  readonly key: string;
  readonly summary: CallerKeySummary;
}

export interface CallerKeyAdmin {
  create(input: {
    name: string;
    scopes: readonly string[];
    expiresAt: Date | null;
    /** Binds the key to one mTLS client certificate (its DER SHA-256); omitted or null: unbound. */
    clientCertSha256?: Buffer | null;
  }): Promise<CreatedCallerKey>;
  /** Every key, oldest first (the CLI). */
  list(): Promise<CallerKeySummary[]>;
  /** One page of keys, oldest first (AdminService.ListCallerKeys); page_size 0: the default. */
  listPage(page: PageRequest): Promise<{ keys: CallerKeySummary[]; nextPageToken: string }>;
  revoke(id: string): Promise<void>;
  /**
   * A new key with the same name, scopes and certificate binding; the old one keeps working for
   * `overlapSeconds`.
   */
  rotate(id: string, overlapSeconds: number): Promise<CreatedCallerKey & { oldKeyExpiresAt: Date }>;
  /** Lifts a suspension a misuse signal put on the key; NOT_FOUND when it is not suspended. */
  reinstate(id: string): Promise<void>;
}

/** Larger page sizes are clamped to the maximum, as for ListSecrets. */
export const CALLER_KEYS_PAGE: PageLimits = { defaultSize: 100, maxSize: 500 };

/** Long enough to roll a key out to every app instance; short enough that a leak is bounded. */
export const MAX_ROTATION_OVERLAP_SECONDS = 7 * 24 * 3600;

export function createCallerKeyAdmin(deps: {
  db: Kysely<Database>;
  now?: () => Date;
  /**
   * False for the AdminService RPCs: a key with the `admin` scope can then be neither created
   * nor rotated, so a leaked admin key cannot mint more of them (L6). The CLI, which holds
   * database access anyway, keeps the default.
   */
  grantsAdmin?: boolean;
}): CallerKeyAdmin {
  const now = deps.now ?? (() => new Date());
  const grantsAdmin = deps.grantsAdmin ?? true;
  const refuseAdminScope = (scopes: readonly string[]): void => {
    if (!grantsAdmin && scopes.includes("admin")) {
      throw new BrokerError(
        "permission_denied",
        "admin caller keys are created and rotated with the keybroker CLI only",
      );
    }
  };
  const admin: CallerKeyAdmin = {
    async create(input) {
      if (!NAME.test(input.name)) {
        throw new BrokerError(
          "invalid_argument",
          "name must be 1-64 characters of letters, digits, space, . _ -",
        );
      }
      const scopes = parseScopes(input.scopes);
      refuseAdminScope(scopes);
      const createdAt = now();
      if (input.expiresAt !== null && input.expiresAt <= createdAt) {
        throw new BrokerError("invalid_argument", "expiry must be in the future");
      }
      const clientCertSha256 = input.clientCertSha256 ?? null;
      if (clientCertSha256 !== null && clientCertSha256.length !== SHA256_BYTES) {
        throw new BrokerError(
          "invalid_argument",
          "client certificate fingerprint must be a SHA-256 (32 bytes)",
        );
      }
      const generated = generateCallerKey();
      const id = `ck_${randomBytes(8).toString("hex")}`;
      await insertCallerKey(deps.db, {
        id,
        name: input.name,
        keyHash: generated.hash,
        last4: generated.last4,
        scopes,
        expiresAt: input.expiresAt,
        clientCertSha256,
      });
      return {
        key: generated.key,
        summary: {
          id,
          name: input.name,
          last4: generated.last4,
          scopes,
          createdAt,
          expiresAt: input.expiresAt,
          revokedAt: null,
          lastUsedAt: null,
          clientCertSha256,
          suspendedAt: null,
          suspendedReason: null,
        },
      };
    },
    list: () => listCallerKeys(deps.db),
    async listPage(page) {
      const size = pageSizeOf(page, CALLER_KEYS_PAGE);
      const after = positionOfPageToken(CALLER_KEYS_PAGE_KIND, page.pageToken);
      return listCallerKeysPage(deps.db, { after, size });
    },
    async rotate(id, overlapSeconds) {
      if (
        !Number.isInteger(overlapSeconds) ||
        overlapSeconds < 0 ||
        overlapSeconds > MAX_ROTATION_OVERLAP_SECONDS
      ) {
        throw new BrokerError(
          "invalid_argument",
          `overlap must be 0-${MAX_ROTATION_OVERLAP_SECONDS} seconds`,
        );
      }
      const old = await findCallerKeyById(deps.db, id);
      const at = now();
      if (old === undefined || old.revokedAt !== null || (old.expiresAt !== null && old.expiresAt <= at)) {
        throw new BrokerError("not_found", "no live caller key with that id");
      }
      refuseAdminScope(old.scopes);
      // The binding carries over: rotating a key must not quietly drop its mTLS requirement.
      const created = await admin.create({
        name: old.name,
        scopes: old.scopes,
        expiresAt: old.expiresAt,
        clientCertSha256: old.clientCertSha256,
      });
      const oldKeyExpiresAt = new Date(at.getTime() + overlapSeconds * 1000);
      await expireCallerKeyBy(deps.db, id, oldKeyExpiresAt);
      return {
        ...created,
        oldKeyExpiresAt:
          old.expiresAt !== null && old.expiresAt < oldKeyExpiresAt ? old.expiresAt : oldKeyExpiresAt,
      };
    },
    async revoke(id) {
      if (!(await revokeCallerKey(deps.db, id, now()))) {
        throw new BrokerError("not_found", "no live caller key with that id");
      }
    },
    async reinstate(id) {
      if (!(await reinstateCallerKey(deps.db, id))) {
        throw new BrokerError("not_found", "no suspended caller key with that id");
      }
    },
  };
  return admin;
}

function parseScopes(scopes: readonly string[]): CallerScope[] {
  const unique = [...new Set(scopes)];
  if (unique.length === 0) throw new BrokerError("invalid_argument", "at least one scope is required");
  const bad = unique.filter((s) => !isCallerScope(s));
  if (bad.length > 0) throw new BrokerError("invalid_argument", `unknown scope(s): ${bad.join(", ")}`);
  return unique as CallerScope[];
}
