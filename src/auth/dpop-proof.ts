import { createHash } from "node:crypto";
import type { CryptoKey, FlattenedJWSInput, JWTHeaderParameters, JWTPayload } from "jose";
import { base64url, calculateJwkThumbprint, EmbeddedJWK, errors, jwtVerify } from "jose";
import { BrokerError } from "../errors.js";

/** The only method a broker RPC is reached with (gRPC, Connect and gRPC-Web all POST). */
export const DPOP_HTM = "POST";

// Asymmetric algorithms only (RFC 9449 §4.2): a browser's WebCrypto key is ES256 or Ed25519.
const ALGORITHMS = ["ES256", "ES384", "EdDSA", "Ed25519", "PS256", "RS256"];
// A proof is a header with a public key and five short claims; anything larger is junk.
const MAX_PROOF_LENGTH = 4096;
const MAX_JTI_LENGTH = 256;

/** How proofs are judged; one per broker, from config. */
export interface DpopProofPolicy {
  /** A proof older (by `iat`) than this is refused. */
  readonly maxAgeSec: number;
  /** Tolerated clock difference with the proof's minter (the user's browser). */
  readonly clockSkewSec: number;
}

/** Public keys already imported, by the thumbprint they were checked against. */
export interface DpopKeyCache {
  get(jkt: string): { readonly jwkJson: string; readonly alg: string; readonly key: CryptoKey } | undefined;
  set(jkt: string, entry: { readonly jwkJson: string; readonly alg: string; readonly key: CryptoKey }): void;
}

/**
 * A bounded map of imported proof keys. Importing a JWK and hashing its thumbprint cost as much
 * CPU as the signature check itself (jose uses WebCrypto), and a user's browser sends the same
 * key with every proof: a hit needs the header's `jwk`, byte for byte as JSON, and the `alg` that
 * were checked against this thumbprint before, so it can only skip work, never a check.
 */
export function createDpopKeyCache(maxEntries: number): DpopKeyCache {
  const entries = new Map<
    string,
    { readonly jwkJson: string; readonly alg: string; readonly key: CryptoKey }
  >();
  return {
    get: (jkt) => entries.get(jkt),
    set(jkt, entry) {
      entries.delete(jkt);
      entries.set(jkt, entry);
      // Bounded: one eviction per insert once full (the oldest insert first).
      if (entries.size > maxEntries) {
        const oldest = entries.keys().next();
        if (oldest.done !== true) entries.delete(oldest.value);
      }
    },
  };
}

/** What must be checked against a proof, for one call. */
export interface DpopProofInput {
  readonly proof: string | undefined;
  /** The access token the proof must be bound to (`ath`). */
  readonly accessToken: string;
  /** The token's `cnf.jkt`: the thumbprint the proof's key must have. */
  readonly jkt: string;
  /** The canonical URI of the RPC being called. */
  readonly htu: string;
  /** Epoch milliseconds. */
  readonly now: number;
  readonly keys?: DpopKeyCache | undefined;
}

/** A proof that passed every stateless check; its id must still be claimed once (replay). */
export interface VerifiedDpopProof {
  /** SHA-256 of (thumbprint, jti): jtis are only unique per key. */
  readonly idHash: Buffer;
  /** Until when the id must be remembered: later, the proof is stale anyway. */
  readonly rememberUntil: Date;
}

/**
 * Verifies a DPoP proof (RFC 9449 §4.3) for one call, statelessly: typ `dpop+jwt`, an asymmetric
 * signature by the public key in its own header whose thumbprint is the token's `cnf.jkt`, `htm`
 * and `htu` naming this RPC, `ath` the hash of this token, a fresh `iat` and a `jti`. jose does
 * the parsing and the signature; nothing here reads a JWT by hand. Messages name the failed check
 * and nothing of the proof or the token.
 */
export async function verifyDpopProof(
  input: DpopProofInput,
  policy: DpopProofPolicy,
): Promise<VerifiedDpopProof> {
  if (input.proof === undefined) {
    throw refusal(
      "dpop_proof_missing",
      "the access token is DPoP-bound: send a DPoP proof in metadata `dpop`",
    );
  }
  if (input.proof.length > MAX_PROOF_LENGTH) throw invalid("DPoP proof too large");
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(input.proof, boundKey(input.jkt, input.keys), {
      typ: "dpop+jwt",
      algorithms: ALGORITHMS,
      maxTokenAge: policy.maxAgeSec,
      clockTolerance: policy.clockSkewSec,
      requiredClaims: ["iat", "jti", "htm", "htu", "ath"],
      currentDate: new Date(input.now),
    }));
  } catch (err) {
    throw fromJose(err);
  }
  if (payload.htm !== DPOP_HTM || payload.htu !== input.htu) {
    throw invalid("DPoP proof is for another request (htm/htu must name this RPC)");
  }
  if (payload.ath !== accessTokenHash(input.accessToken)) {
    throw invalid("DPoP proof is for another access token (ath)");
  }
  const { jti, iat } = payload;
  if (typeof jti !== "string" || jti.length === 0 || jti.length > MAX_JTI_LENGTH || typeof iat !== "number") {
    throw invalid("DPoP proof claims invalid");
  }
  const idHash = createHash("sha256").update(`${input.jkt.length}:${input.jkt}|`).update(jti).digest();
  return { idHash, rememberUntil: new Date((iat + policy.maxAgeSec + policy.clockSkewSec) * 1000) };
}

/**
 * The proof's own public key (header `jwk`), accepted only if its thumbprint is the token's
 * `cnf.jkt`. EmbeddedJWK refuses a missing or private key and imports it for the header's `alg`.
 */
function boundKey(jkt: string, keys: DpopKeyCache | undefined) {
  return async (header: JWTHeaderParameters, token: FlattenedJWSInput): Promise<CryptoKey> => {
    const jwk = header.jwk;
    const jwkJson =
      typeof jwk === "object" && jwk !== null && !("d" in jwk) ? JSON.stringify(jwk) : undefined;
    const hit = keys?.get(jkt);
    if (hit !== undefined && hit.jwkJson === jwkJson && hit.alg === header.alg) return hit.key;
    const key = (await EmbeddedJWK(header, token)) as CryptoKey;
    if (jwk === undefined || jwkJson === undefined || (await calculateJwkThumbprint(jwk, "sha256")) !== jkt) {
      throw invalid("DPoP proof is signed by a key other than the one the access token is bound to");
    }
    keys?.set(jkt, { jwkJson, alg: header.alg, key });
    return key;
  };
}

/** `ath` (RFC 9449 §4.2): base64url SHA-256 of the ASCII access token. */
export function accessTokenHash(accessToken: string): string {
  return base64url.encode(createHash("sha256").update(accessToken, "ascii").digest());
}

function refusal(reason: "dpop_proof_missing" | "dpop_proof_invalid", message: string, cause?: unknown) {
  return new BrokerError("unauthenticated", message, { reason, ...(cause === undefined ? {} : { cause }) });
}

function invalid(message: string, cause?: unknown): BrokerError {
  return refusal("dpop_proof_invalid", message, cause);
}

/**
 * jose's claim errors carry the payload: the cause keeps only the code and fixed message. The
 * verify does no I/O, so anything else it throws (e.g. node:crypto refusing a bad key) is about
 * the proof too.
 */
function fromJose(err: unknown): BrokerError {
  if (err instanceof BrokerError) return err;
  if (!(err instanceof errors.JOSEError)) return invalid("malformed DPoP proof", err);
  const cause = new Error(`${err.code}: ${err.message}`);
  if (err instanceof errors.JWTExpired) return invalid("DPoP proof is too old (iat)", cause);
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === "iat") return invalid("DPoP proof is too old or from the future (iat)", cause);
    if (err.claim === "typ") return invalid("DPoP proof must have typ dpop+jwt", cause);
    return invalid("DPoP proof lacks a required claim or has an invalid one", cause);
  }
  if (err instanceof errors.JWSSignatureVerificationFailed)
    return invalid("DPoP proof signature invalid", cause);
  if (err instanceof errors.JOSEAlgNotAllowed) return invalid("DPoP proof algorithm not allowed", cause);
  return invalid("malformed DPoP proof", cause);
}
