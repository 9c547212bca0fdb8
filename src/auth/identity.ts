/**
 * Scopes a caller key can carry. The `proxy:<class>` scopes allow proxied calls of one operation
 * class (SPEC I10). `proxy:call`, from before classes existed, still admits a key to ProxyService
 * and allows every class that is NOT dangerous (read, write, trade); transfer, credentials and
 * webhooks each need their own scope. See policy/operation-grant.ts `callerAllowsClass`.
 */
export const CALLER_SCOPES = [
  "secrets:read",
  "secrets:write",
  "proxy:call",
  "proxy:read",
  "proxy:write",
  "proxy:trade",
  "proxy:transfer",
  "proxy:credentials",
  "proxy:webhooks",
  "admin",
  "session:end",
  // Issue 15: StartConnection (the OAuth flow); the tokens themselves never reach the caller.
  "oauth:connect",
] as const;
export type CallerScope = (typeof CALLER_SCOPES)[number];

/** Any one of these admits a caller key to ProxyService; the call's class is checked later. */
export const PROXY_SCOPES: readonly CallerScope[] = CALLER_SCOPES.filter((s) => s.startsWith("proxy:"));

/** One scope a call needs, or a list of which any one will do. */
export type ScopeRequirement = CallerScope | readonly CallerScope[];

/** The requirement as one printable, audit-safe string ("proxy:call|proxy:read|..."). */
export function scopeRequirementLabel(required: ScopeRequirement): string {
  return typeof required === "string" ? required : required.join("|");
}

export function isCallerScope(value: string): value is CallerScope {
  return (CALLER_SCOPES as readonly string[]).includes(value);
}

/** An authenticated caller (the main app, or ops). */
export interface CallerIdentity {
  readonly keyId: string;
  readonly name: string;
  readonly scopes: ReadonlySet<CallerScope>;
  /**
   * True when the key's immutable parts came from memory and its revocation, suspension and
   * expiry are still to be checked by the statement that commits the call's `started` audit row
   * (catalogue B20 holds: that statement refuses a dead key). Only sensitive audited operations
   * may act for such a caller.
   */
  readonly livenessPending?: boolean;
}

/**
 * An authenticated end user. The raw `sub` never leaves the auth module: the user is
 * known to the rest of the broker only by `userRef` = HMAC(pepper, issuer | sub).
 */
export interface UserIdentity {
  /** 32 bytes; the primary key of the user's row. */
  readonly userRef: Buffer;
  /** Token expiry, epoch seconds. */
  readonly expiresAt: number;
  /** The token's `iat`, epoch seconds (compared with logouts, issue 14; the misuse signals watch token age). */
  readonly issuedAt?: number | undefined;
  /** HMAC(pepper, issuer | sid) when the token names its session (`sid`); never the raw sid. */
  readonly sessionRef?: Buffer | undefined;
  /**
   * The token's `cnf.jkt` (RFC 9449): the SHA-256 thumbprint of the key every call must prove
   * possession of with a DPoP proof. Kept with the cached identity, so a cache hit is checked too.
   */
  readonly boundKeyThumbprint?: string | undefined;
}
