import { randomUUID } from "node:crypto";
import type { JWK } from "jose";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from "jose";
import { accessTokenHash } from "../../src/auth/dpop-proof.js";

/** What a proof says; each default is what a correct client sends. */
export interface ProofOptions {
  readonly htu: string;
  readonly accessToken: string;
  readonly htm?: string;
  /** Epoch seconds; default now. */
  readonly iat?: number;
  readonly jti?: string;
  /** Overrides the `ath` computed from `accessToken`. */
  readonly ath?: string;
  /** Extra or overriding protected-header members (e.g. a private `jwk`, another `typ`). */
  readonly header?: Record<string, unknown>;
}

/** A client's DPoP key pair, its private half not extractable, as a browser's WebCrypto key is. */
export interface DpopKey {
  /** `cnf.jkt` for a token bound to this key. */
  readonly jkt: string;
  readonly publicJwk: JWK;
  /** Mints one proof (RFC 9449 §4.2), signed by this key. */
  proof(options: ProofOptions): Promise<string>;
}

export async function createDpopKey(alg: "ES256" | "EdDSA" = "ES256"): Promise<DpopKey> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: false });
  const publicJwk = await exportJWK(publicKey);
  const jkt = await calculateJwkThumbprint(publicJwk, "sha256");
  return {
    jkt,
    publicJwk,
    proof: (o) =>
      new SignJWT({
        htm: o.htm ?? "POST",
        htu: o.htu,
        ath: o.ath ?? accessTokenHash(o.accessToken),
        jti: o.jti ?? randomUUID(),
        iat: o.iat ?? Math.floor(Date.now() / 1000),
      })
        .setProtectedHeader({ alg, typ: "dpop+jwt", jwk: publicJwk, ...o.header })
        .sign(privateKey),
  };
}
