/** Scopes a caller key can carry. */
export const CALLER_SCOPES = ["secrets:read", "secrets:write", "proxy:call", "admin"] as const;
export type CallerScope = (typeof CALLER_SCOPES)[number];

export function isCallerScope(value: string): value is CallerScope {
  return (CALLER_SCOPES as readonly string[]).includes(value);
}

/** An authenticated caller (the main app, or ops). */
export interface CallerIdentity {
  readonly keyId: string;
  readonly name: string;
  readonly scopes: ReadonlySet<CallerScope>;
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
  /** The token's `iat`, epoch seconds, when it has one (the misuse signals watch token age). */
  readonly issuedAt?: number | undefined;
}
