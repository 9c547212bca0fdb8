import { createHash } from "node:crypto";
import { BrokerError } from "../errors.js";
import type { UserIdentity } from "./identity.js";

/** Remembers tokens that fully verified, so a busy user costs one signature check per token. */
export interface TokenCache {
  get(token: string): UserIdentity | undefined;
  set(token: string, identity: UserIdentity): void;
  /** Drops every entry whose identity matches (a logout: issue 14); returns the dropped identities. */
  evictWhere(matches: (identity: UserIdentity) => boolean): UserIdentity[];
  readonly size: number;
}

export interface TokenCacheOptions {
  /** Upper bound on entries; the least recently used entry is dropped first. */
  readonly maxEntries: number;
  /** Epoch milliseconds. */
  readonly now: () => number;
}

/**
 * A bounded LRU of verified tokens. Keys are SHA-256 digests, so the tokens themselves are
 * never held (a heap dump yields no usable bearer token). Only successes are stored, and an
 * entry is dropped on read once the token's `exp` has passed, so the cache can never extend a
 * token's life. A Map keeps insertion order, which is all an LRU needs: a hit is moved to the end.
 */
export function createTokenCache(opts: TokenCacheOptions): TokenCache {
  if (!Number.isInteger(opts.maxEntries) || opts.maxEntries < 0) {
    throw new BrokerError("internal", "token cache maxEntries must be a non-negative integer");
  }
  const entries = new Map<string, UserIdentity>();
  const keyOf = (token: string): string => createHash("sha256").update(token).digest("base64");

  return {
    get(token) {
      const key = keyOf(token);
      const hit = entries.get(key);
      if (hit === undefined) return undefined;
      entries.delete(key);
      if (hit.expiresAt * 1000 <= opts.now()) return undefined;
      entries.set(key, hit);
      // A copy, so a caller that scribbles on the buffer cannot change who the next hit is.
      return copyOf(hit);
    },
    set(token, identity) {
      if (opts.maxEntries === 0 || identity.expiresAt * 1000 <= opts.now()) return;
      const key = keyOf(token);
      entries.delete(key);
      entries.set(key, copyOf(identity));
      // Bounded loop: at most one eviction per insert once full.
      while (entries.size > opts.maxEntries) {
        const oldest = entries.keys().next();
        if (oldest.done === true) break;
        entries.delete(oldest.value);
      }
    },
    evictWhere(matches) {
      const evicted: UserIdentity[] = [];
      for (const [key, identity] of entries) {
        if (!matches(identity)) continue;
        entries.delete(key);
        evicted.push(identity);
      }
      return evicted;
    },
    get size() {
      return entries.size;
    },
  };
}

function copyOf(identity: UserIdentity): UserIdentity {
  return {
    userRef: Buffer.from(identity.userRef),
    expiresAt: identity.expiresAt,
    ...(identity.issuedAt === undefined ? {} : { issuedAt: identity.issuedAt }),
    ...(identity.sessionRef === undefined ? {} : { sessionRef: Buffer.from(identity.sessionRef) }),
    // Dropping it here would let a cached DPoP-bound token through without a proof.
    ...(identity.boundKeyThumbprint === undefined ? {} : { boundKeyThumbprint: identity.boundKeyThumbprint }),
  };
}
