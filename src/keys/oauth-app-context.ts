import type { EncryptionContext } from "./keyring.js";

/**
 * The KMS context and AAD of an OAuth app's client secret: the provider, the version and the client
 * id, so a row copied to another provider, rolled back to an older version, or given another client
 * id no longer opens. None of these is secret (a client id is in every authorization URL). One
 * builder for the store that seals and opens it and the rewrap that re-encrypts it, so they cannot
 * drift apart.
 */
export function oauthAppContext(provider: string, version: number, clientId: string): EncryptionContext {
  return { purpose: "keybroker:oauth-app-secret", provider, version: String(version), client_id: clientId };
}

/**
 * The KMS context of a pending authorization's sealed PKCE verifier: bound to the hash of its
 * `state`, so a verifier row moved to another authorization no longer opens.
 */
export function oauthPkceVerifierContext(stateHash: Buffer): EncryptionContext {
  return { purpose: "keybroker:oauth-pkce-verifier", state_hash: stateHash.toString("hex") };
}
