import { createHmac } from "node:crypto";
import type { TokenVerifier, TokenVerifierOptions } from "../../../src/auth/token-verifier.js";
import { createTokenVerifier } from "../../../src/auth/token-verifier.js";
import type { TestIssuer } from "../../support/test-issuer.js";

const PEPPER = Buffer.alloc(32, 7);

/** The pepper-keyed HMAC the real service uses, with a fixed test pepper. */
export function hmacUserRef(issuer: string, subject: string): Buffer {
  return createHmac("sha256", PEPPER).update(`${issuer}|${subject}`).digest();
}

/** A verifier pointed at `issuer` with production-like defaults, plus a count of derivations. */
export function verifierFor(
  issuer: TestIssuer,
  overrides: Partial<TokenVerifierOptions> = {},
): { verifier: TokenVerifier; derivations: () => number } {
  let derivations = 0;
  const verifier = createTokenVerifier({
    issuer: issuer.issuer,
    audience: issuer.audience,
    jwksUrl: issuer.jwksUrl,
    requiredPermission: issuer.permission,
    clockToleranceSec: 0,
    jwksCacheMaxAgeMs: 600_000,
    jwksCooldownMs: 30_000,
    jwksTimeoutMs: 2_000,
    cacheMaxEntries: 100,
    deriveUserRef: (iss, sub) => {
      derivations++;
      return hmacUserRef(iss, sub);
    },
    ...overrides,
  });
  return { verifier, derivations: () => derivations };
}

/** Awaits a promise that must reject with a BrokerError, and returns that error. */
export function b64url(value: unknown): string {
  return Buffer.from(typeof value === "string" ? value : JSON.stringify(value)).toString("base64url");
}

/** The same token with its protected header replaced (signature left as is). */
export function withHeader(token: string, header: Record<string, unknown>): string {
  const [, payload, signature] = token.split(".");
  return `${b64url(header)}.${payload}.${signature}`;
}
