import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDpopReplayGuard } from "../../../src/auth/dpop-replay-guard.js";
import { createTokenVerifier, type TokenVerifier } from "../../../src/auth/token-verifier.js";
import { deriveUserRef } from "../../../src/keys/user-ref.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { createDpopKey, type DpopKey } from "../../support/dpop-keys.js";
import { startTestIssuer, type TestIssuer } from "../../support/test-issuer.js";

const PEPPER = Buffer.alloc(32, 7);
const ORIGIN = "https://keybroker.test";
const CALL = "/keybroker.v1.ProxyService/Call";
const LIST = "/keybroker.v1.SecretService/ListSecrets";
const MAX_AGE_SEC = 60;
const SKEW_SEC = 5;

let issuer: TestIssuer;
let key: DpopKey;
let otherKey: DpopKey;

beforeAll(async () => {
  issuer = await startTestIssuer();
  [key, otherKey] = await Promise.all([createDpopKey(), createDpopKey()]);
});
afterAll(async () => {
  await issuer.close();
});

/** A verifier whose shared replay table is an in-memory set (the real table is covered end to end). */
function verifierWith(required = false): TokenVerifier {
  const claimed = new Set<string>();
  return createTokenVerifier({
    issuer: issuer.issuer,
    audience: issuer.audience,
    jwksUrl: issuer.jwksUrl,
    requiredPermission: issuer.permission,
    clockToleranceSec: 5,
    jwksCacheMaxAgeMs: 600_000,
    jwksCooldownMs: 1_000,
    jwksTimeoutMs: 2_000,
    cacheMaxEntries: 100,
    deriveUserRef: (iss, sub) => deriveUserRef(PEPPER, iss, sub),
    dpop: {
      required,
      htuOrigin: ORIGIN,
      maxAgeSec: MAX_AGE_SEC,
      clockSkewSec: SKEW_SEC,
      replay: createDpopReplayGuard({
        claimShared: async (hash) => {
          const id = hash.toString("hex");
          if (claimed.has(id)) return false;
          claimed.add(id);
          return true;
        },
        maxLocalEntries: 100,
        now: Date.now,
      }),
    },
  });
}

const boundToken = (jkt = key.jkt) => issuer.sign({ cnf: { jkt } });

async function refusal(
  work: Promise<unknown>,
): Promise<{ code: string; reason: string | undefined; message: string }> {
  const err = await brokerErrorOf(work);
  return { code: err.code, reason: err.reason, message: err.message };
}

describe("DPoP sender-constrained tokens (RFC 9449, issue 14)", () => {
  it("accepts a bound token with a correct proof for this RPC, and binds the identity to the key", async () => {
    const verifier = verifierWith();
    const token = await boundToken();
    const identity = await verifier.verify(token, {
      rpcPath: CALL,
      dpopProof: await key.proof({ htu: `${ORIGIN}${CALL}`, accessToken: token }),
    });
    expect(identity.boundKeyThumbprint).toBe(key.jkt);
  });

  it("accepts an Ed25519 proof as well as ES256", async () => {
    const edKey = await createDpopKey("EdDSA");
    const token = await boundToken(edKey.jkt);
    const proof = await edKey.proof({ htu: `${ORIGIN}${CALL}`, accessToken: token });
    await expect(verifierWith().verify(token, { rpcPath: CALL, dpopProof: proof })).resolves.toBeDefined();
  });

  it("I135 refuses a bound token without a proof as UNAUTHENTICATED dpop_proof_missing", async () => {
    const token = await boundToken();
    expect(await refusal(verifierWith().verify(token, { rpcPath: CALL }))).toMatchObject({
      code: "unauthenticated",
      reason: "dpop_proof_missing",
    });
  });

  it("I136 refuses a proof used a second time as dpop_proof_replayed", async () => {
    const verifier = verifierWith();
    const token = await boundToken();
    const proof = await key.proof({ htu: `${ORIGIN}${CALL}`, accessToken: token });
    await verifier.verify(token, { rpcPath: CALL, dpopProof: proof });
    expect(await refusal(verifier.verify(token, { rpcPath: CALL, dpopProof: proof }))).toMatchObject({
      code: "unauthenticated",
      reason: "dpop_proof_replayed",
    });
  });

  it("I137 refuses a proof minted for another RPC, another origin or another method", async () => {
    const verifier = verifierWith();
    const token = await boundToken();
    for (const proof of [
      await key.proof({ htu: `${ORIGIN}${LIST}`, accessToken: token }),
      await key.proof({ htu: `https://evil.test${CALL}`, accessToken: token }),
      await key.proof({ htu: `${ORIGIN}${CALL}`, accessToken: token, htm: "GET" }),
    ]) {
      expect(await refusal(verifier.verify(token, { rpcPath: CALL, dpopProof: proof }))).toMatchObject({
        code: "unauthenticated",
        reason: "dpop_proof_invalid",
        message: "DPoP proof is for another request (htm/htu must name this RPC)",
      });
    }
  });

  it("I138 refuses a proof minted for another access token (ath)", async () => {
    const token = await boundToken();
    // RS256 is deterministic: the other token differs by a claim, not by chance.
    const other = await issuer.sign({ cnf: { jkt: key.jkt }, sid: "another-session" });
    const proof = await key.proof({ htu: `${ORIGIN}${CALL}`, accessToken: other });
    expect(await refusal(verifierWith().verify(token, { rpcPath: CALL, dpopProof: proof }))).toMatchObject({
      reason: "dpop_proof_invalid",
      message: "DPoP proof is for another access token (ath)",
    });
  });

  it("I139 refuses a proof signed by a key other than the one the token is bound to, also once the bound key is cached", async () => {
    const verifier = verifierWith();
    const token = await boundToken();
    // The right key first, so its import is cached under the token's thumbprint.
    await verifier.verify(token, {
      rpcPath: CALL,
      dpopProof: await key.proof({ htu: `${ORIGIN}${CALL}`, accessToken: token }),
    });
    const proof = await otherKey.proof({ htu: `${ORIGIN}${CALL}`, accessToken: token });
    expect(await refusal(verifier.verify(token, { rpcPath: CALL, dpopProof: proof }))).toMatchObject({
      reason: "dpop_proof_invalid",
      message: "DPoP proof is signed by a key other than the one the access token is bound to",
    });
  });

  it("I140 refuses a stale proof, one from the future, and one that is not typ dpop+jwt", async () => {
    const verifier = verifierWith();
    const token = await boundToken();
    const now = Math.floor(Date.now() / 1000);
    const htu = `${ORIGIN}${CALL}`;
    for (const proof of [
      await key.proof({ htu, accessToken: token, iat: now - MAX_AGE_SEC - SKEW_SEC - 5 }),
      await key.proof({ htu, accessToken: token, iat: now + SKEW_SEC + 30 }),
      await key.proof({ htu, accessToken: token, header: { typ: "JWT" } }),
    ]) {
      expect(await refusal(verifier.verify(token, { rpcPath: CALL, dpopProof: proof }))).toMatchObject({
        code: "unauthenticated",
        reason: "dpop_proof_invalid",
      });
    }
  });

  it("I141 refuses a cached bound token presented again without a proof (the cache keeps the binding)", async () => {
    const verifier = verifierWith();
    const token = await boundToken();
    await verifier.verify(token, {
      rpcPath: CALL,
      dpopProof: await key.proof({ htu: `${ORIGIN}${CALL}`, accessToken: token }),
    });
    expect(await refusal(verifier.verify(token, { rpcPath: CALL }))).toMatchObject({
      reason: "dpop_proof_missing",
    });
  });

  it("I142 refuses every unbound token when DPoP is required, and accepts one when it is not", async () => {
    const token = await issuer.sign();
    expect(await refusal(verifierWith(true).verify(token, { rpcPath: CALL }))).toMatchObject({
      code: "unauthenticated",
      reason: "token_invalid",
      message: "this broker accepts only DPoP-bound access tokens (cnf.jkt)",
    });
    await expect(verifierWith(false).verify(token, { rpcPath: CALL })).resolves.toBeDefined();
  });

  it("refuses a token whose cnf it cannot honour (no jkt, a malformed thumbprint)", async () => {
    for (const cnf of [{ "x5t#S256": "abc" }, { jkt: "not-a-thumbprint" }, "jkt"]) {
      const token = await issuer.sign({ cnf });
      expect(await refusal(verifierWith().verify(token, { rpcPath: CALL }))).toMatchObject({
        reason: "token_invalid",
      });
    }
  });

  it("refuses a bound token on a broker with no DPoP origin configured", async () => {
    const verifier = createTokenVerifier({
      issuer: issuer.issuer,
      audience: issuer.audience,
      jwksUrl: issuer.jwksUrl,
      requiredPermission: issuer.permission,
      clockToleranceSec: 5,
      jwksCacheMaxAgeMs: 600_000,
      jwksCooldownMs: 1_000,
      jwksTimeoutMs: 2_000,
      cacheMaxEntries: 100,
      deriveUserRef: (iss, sub) => deriveUserRef(PEPPER, iss, sub),
    });
    const token = await boundToken();
    const proof = await key.proof({ htu: `${ORIGIN}${CALL}`, accessToken: token });
    expect(await refusal(verifier.verify(token, { rpcPath: CALL, dpopProof: proof }))).toMatchObject({
      reason: "token_invalid",
    });
  });

  it("refuses a proof carrying a private key in its header, or signed with alg none", async () => {
    const token = await boundToken();
    const htu = `${ORIGIN}${CALL}`;
    const withPrivate = await key.proof({
      htu,
      accessToken: token,
      header: { jwk: { ...key.publicJwk, d: "AAAA" } },
    });
    const [head, body] = (await key.proof({ htu, accessToken: token })).split(".");
    const unsigned = `${Buffer.from(JSON.stringify({ alg: "none", typ: "dpop+jwt", jwk: key.publicJwk })).toString("base64url")}.${body}.${head}`;
    const verifier = verifierWith();
    await verifier.verify(token, { rpcPath: CALL, dpopProof: await key.proof({ htu, accessToken: token }) });
    for (const proof of [withPrivate, unsigned]) {
      expect(await refusal(verifier.verify(token, { rpcPath: CALL, dpopProof: proof }))).toMatchObject({
        reason: "dpop_proof_invalid",
      });
    }
  });

  it("fails closed (UNAVAILABLE) when the shared replay table cannot be reached, and the proof stays usable", async () => {
    let down = true;
    const guard = createDpopReplayGuard({
      claimShared: async () => {
        if (down) throw new Error("connection refused");
        return true;
      },
      maxLocalEntries: 10,
      now: Date.now,
    });
    const hash = Buffer.alloc(32, 1);
    const until = new Date(Date.now() + 60_000);
    expect((await brokerErrorOf(guard.claim(hash, until))).code).toBe("unavailable");
    down = false;
    await expect(guard.claim(hash, until)).resolves.toBeUndefined();
    expect((await brokerErrorOf(guard.claim(hash, until))).reason).toBe("dpop_proof_replayed");
  });
});
