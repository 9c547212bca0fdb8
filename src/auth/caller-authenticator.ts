import { timingSafeEqual } from "node:crypto";
import { BrokerError, isBrokerError, type RefusalReason } from "../errors.js";
import type { StoredCallerKey } from "../store/caller-keys.repository.js";
import { parseCallerKey } from "./caller-key-format.js";
import type { CallerIdentity, ScopeRequirement } from "./identity.js";
import { isCallerScope } from "./identity.js";

/** A stored caller key: only its hash, never the key (the store's row, as the hot path reads it). */
export type CallerKeyRecord = StoredCallerKey;

/** What the transport proved about the connection a key arrived on. */
export interface CallerTransport {
  /**
   * SHA-256 of the verified client certificate (DER) when the connection is mTLS. Read only
   * for keys bound to a certificate, so transports may compute it lazily.
   */
  readonly clientCertSha256: Buffer | undefined;
}

/** Finds a caller key by the SHA-256 of the presented key (implemented by the store). */
export interface CallerKeyLookup {
  findByHash(hash: Buffer): Promise<CallerKeyRecord | undefined>;
}

export interface CallerAuthenticatorDeps {
  readonly lookup: CallerKeyLookup;
  /** Epoch milliseconds. */
  readonly now?: () => number;
  /** Records last use; best effort, throttled per key, its failures never fail the call. */
  readonly markUsed?: (id: string) => void | Promise<void>;
  readonly markUsedIntervalMs?: number;
  /**
   * True for a key this replica has suspended but whose row may not say so yet (a misuse signal's
   * automatic response, written in the background): refused here at once, fail closed.
   */
  readonly isSuspensionHeld?: (id: string) => boolean;
}

/** Authenticates the calling application by its broker-issued key. */
export interface CallerAuthenticator {
  /**
   * Without `transport`, the call counts as presenting no client certificate: keys bound to
   * one are then refused, never waved through.
   */
  authenticate(
    rawKey: string | undefined,
    requiredScope: ScopeRequirement,
    transport?: CallerTransport,
    options?: AuthenticateOptions,
  ): Promise<CallerIdentity>;
  /** Drops a key's cached parts, so its next call reads the database (it was found dead). */
  forget(keyId: string): void;
}

export interface AuthenticateOptions {
  /**
   * "at-audit": a key seen before is served from memory (its immutable parts only: id, name,
   * hash, scopes, certificate binding) and returned `livenessPending`; its revocation,
   * suspension and expiry are then checked by the statement that commits the call's `started`
   * audit row, which refuses a dead key (catalogue B20, issue 17 item 2). Default "now": read
   * from the database on every call.
   */
  readonly liveness?: "now" | "at-audit";
}

/** The parts of a stored key that never change after it is created. */
interface ImmutableKey {
  readonly id: string;
  readonly name: string;
  readonly keyHash: Buffer;
  readonly scopes: readonly string[];
  readonly clientCertSha256: Buffer | null;
  /** As last read: expiry can only move earlier, and the audit statement checks the stored one. */
  readonly expiresAt: Date | null;
}

const INVALID_KEY = "invalid caller key";
const DEFAULT_MARK_USED_INTERVAL_MS = 60_000;
// Bounds the throttle map if keys churn; dropping entries only means an extra markUsed call.
const MAX_THROTTLE_ENTRIES = 10_000;
// Bounds the immutable-parts cache; dropping entries only means a database read on the next call.
const MAX_CACHED_KEYS = 10_000;

/**
 * Every failure to authenticate gives the same message, so a caller cannot tell an unknown key
 * from a revoked or expired one. With liveness "now" records are read on every call; with
 * "at-audit" only the immutable parts are cached and the audit statement checks the rest. Either
 * way a revocation or expiry takes effect on the very next call (catalogue B20).
 */
export function createCallerAuthenticator(deps: CallerAuthenticatorDeps): CallerAuthenticator {
  const now = deps.now ?? Date.now;
  const interval = deps.markUsedIntervalMs ?? DEFAULT_MARK_USED_INTERVAL_MS;
  const lastMarked = new Map<string, number>();

  function noteUse(id: string): void {
    const markUsed = deps.markUsed;
    if (markUsed === undefined) return;
    const at = now();
    const last = lastMarked.get(id);
    if (last !== undefined && at - last < interval) return;
    if (lastMarked.size >= MAX_THROTTLE_ENTRIES) lastMarked.clear();
    lastMarked.set(id, at);
    try {
      const pending = markUsed(id);
      if (pending instanceof Promise) pending.catch(() => undefined);
    } catch {
      // Last-used is bookkeeping; losing one update must not refuse an authenticated call.
    }
  }

  // Keyed by the hex SHA-256 of the presented key: a hit proves the caller holds that key.
  const known = new Map<string, ImmutableKey>();

  function remember(hex: string, record: CallerKeyRecord): void {
    if (known.size >= MAX_CACHED_KEYS) known.clear();
    const { id, name, keyHash, scopes, clientCertSha256, expiresAt } = record;
    known.set(hex, { id, name, keyHash, scopes, clientCertSha256, expiresAt });
  }

  async function readLive(hash: Buffer, hex: string): Promise<ImmutableKey> {
    let record: CallerKeyRecord | undefined;
    try {
      record = await deps.lookup.findByHash(hash);
    } catch (err) {
      if (isBrokerError(err)) throw err;
      throw new BrokerError("unavailable", "caller key store unavailable", { cause: err });
    }
    if (record === undefined) throw invalid("caller key unknown");

    // Compare the stored hash ourselves, in constant time on equal lengths (catalogue B18):
    // the lookup may match by index or prefix, and must not be the only check.
    if (record.keyHash.length !== hash.length || !timingSafeEqual(record.keyHash, hash)) {
      throw invalid(`caller key ${record.id} hash mismatch`);
    }
    // Any revocation counts, even one dated in the future: revocation is never scheduled.
    if (record.revokedAt !== null) {
      known.delete(hex);
      throw invalid(`caller key ${record.id} revoked`);
    }
    // A suspension (misuse signal) is refused exactly like a revocation until reinstated by CLI.
    if (record.suspendedAt !== null) {
      known.delete(hex);
      throw invalid(`caller key ${record.id} suspended`);
    }
    remember(hex, record);
    return record;
  }

  return {
    async authenticate(rawKey, requiredScope, transport, options) {
      // Shape and checksum first: junk and typos never reach the database (catalogue B17).
      const hash = rawKey === undefined ? undefined : parseCallerKey(rawKey);
      if (hash === undefined) {
        throw rawKey === undefined
          ? invalid("caller key missing", "caller_key_missing")
          : invalid("caller key malformed");
      }
      const hex = hash.toString("hex");
      const deferred = options?.liveness === "at-audit";
      const cached = deferred ? known.get(hex) : undefined;
      const record = cached ?? (await readLive(hash, hex));

      if (deps.isSuspensionHeld?.(record.id) === true) throw invalid(`caller key ${record.id} suspended`);
      if (record.expiresAt !== null && record.expiresAt.getTime() <= now()) {
        known.delete(hex);
        throw invalid(`caller key ${record.id} expired`);
      }
      // A bound key is only half a credential: a copy of it (T1) is useless without the
      // certificate's private key, which the TLS handshake proved the peer holds (catalogue B22).
      // Checked before scopes, so a stolen key alone cannot even learn what it may do.
      if (record.clientCertSha256 !== null) {
        const presented = transport?.clientCertSha256;
        if (presented === undefined) throw invalid(`caller key ${record.id} needs its client certificate`);
        if (
          presented.length !== record.clientCertSha256.length ||
          !timingSafeEqual(presented, record.clientCertSha256)
        ) {
          throw invalid(`caller key ${record.id} presented another client certificate`);
        }
      }

      noteUse(record.id);
      const scopes = new Set(record.scopes.filter(isCallerScope));
      const admitted =
        typeof requiredScope === "string"
          ? scopes.has(requiredScope)
          : requiredScope.some((scope) => scopes.has(scope));
      if (!admitted) {
        const wanted =
          typeof requiredScope === "string"
            ? `the ${requiredScope} scope`
            : `any of the scopes ${requiredScope.join(", ")}`;
        throw new BrokerError("permission_denied", `caller key lacks ${wanted}`, {
          reason: "caller_key_scope_missing",
        });
      }
      // Only a key served from memory is unchecked; one just read was live a moment ago.
      return cached === undefined
        ? { keyId: record.id, name: record.name, scopes }
        : { keyId: record.id, name: record.name, scopes, livenessPending: true };
    },
    forget(keyId) {
      for (const [hex, key] of known) if (key.id === keyId) known.delete(hex);
    },
  };
}

/**
 * One message and one machine reason for every refusal of a presented key; why (never the key)
 * goes to `cause` for the logs. Only a missing key says so: the caller knows it sent none.
 */
function invalid(why: string, reason: RefusalReason = "caller_key_invalid"): BrokerError {
  return new BrokerError("unauthenticated", INVALID_KEY, { cause: new Error(why), reason });
}
