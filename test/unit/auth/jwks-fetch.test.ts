import { readFileSync } from "node:fs";
import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createJwksFetch } from "../../../src/auth/jwks-fetch.js";
import { createTokenVerifier } from "../../../src/auth/token-verifier.js";
import { createMtlsCertificates, type MtlsCertificates } from "../../support/mtls-certificates.js";

/** An https issuer whose certificate chains to a private CA only (review L7). */
describe("JWKS fetch with the issuer's private CA", () => {
  let certs: MtlsCertificates;
  let server: Server;
  let issuer = "";
  let token = "";

  beforeAll(async () => {
    certs = createMtlsCertificates();
    const { publicKey, privateKey } = await generateKeyPair("RS256");
    const jwk = { ...(await exportJWK(publicKey)), kid: "k1", alg: "RS256", use: "sig" };
    server = createServer(
      { cert: readFileSync(certs.serverCertFile), key: readFileSync(certs.serverKeyFile) },
      (_req, res) => {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ keys: [jwk] }));
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    issuer = `https://localhost:${(server.address() as AddressInfo).port}/`;
    token = await new SignJWT({ permissions: ["keybroker:use"] })
      .setProtectedHeader({ alg: "RS256", kid: "k1" })
      .setIssuer(issuer)
      .setAudience("api")
      .setSubject("alice")
      .setIssuedAt()
      .setExpirationTime("5m")
      .sign(privateKey);
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    certs.remove();
  });

  const verifier = (jwksFetch?: ReturnType<typeof createJwksFetch>) =>
    createTokenVerifier({
      issuer,
      audience: "api",
      jwksUrl: `${issuer}.well-known/jwks.json`,
      requiredPermission: "keybroker:use",
      clockToleranceSec: 5,
      jwksCacheMaxAgeMs: 60_000,
      jwksCooldownMs: 1_000,
      jwksTimeoutMs: 2_000,
      cacheMaxEntries: 0,
      deriveUserRef: () => Buffer.alloc(32),
      ...(jwksFetch === undefined ? {} : { jwksFetch: jwksFetch.fetch }),
    });

  it("L7 verifies a token from an https issuer with a private CA given as the issuer CA file", async () => {
    const jwksFetch = createJwksFetch(readFileSync(certs.caFile));
    try {
      await expect(verifier(jwksFetch).verify(token)).resolves.toMatchObject({ userRef: Buffer.alloc(32) });
    } finally {
      await jwksFetch.close();
    }
  });

  it("L7 still refuses that issuer's certificate without the CA (no TLS check is relaxed)", async () => {
    await expect(verifier().verify(token)).rejects.toMatchObject({ code: "unavailable" });
  });
});
