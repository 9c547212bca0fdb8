import { createHash, randomBytes } from "node:crypto";

/** A fresh `state` or PKCE verifier: 32 random bytes, base64url (43 characters, RFC 7636 §4.1). */
export function randomToken(): string {
  return randomBytes(32).toString("base64url");
}

/** What a state or verifier must look like when it comes back: exactly what randomToken makes. */
export function isRandomToken(value: string): boolean {
  return /^[A-Za-z0-9_-]{43}$/.test(value);
}

/** RFC 7636 §4.2: BASE64URL(SHA256(ASCII(code_verifier))). */
export function s256Challenge(verifier: string): string {
  return createHash("sha256").update(verifier, "ascii").digest("base64url");
}

/** Only this is stored for a state: a database reader cannot rebuild a callback from it. */
export function stateHash(state: string): Buffer {
  return createHash("sha256").update(`keybroker/oauth-state/v1\0${state}`, "utf8").digest();
}
