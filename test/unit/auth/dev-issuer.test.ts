import { chmod, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { DevIssuer, DevIssuerKey } from "../../../src/auth/dev-issuer.js";
import { loadOrCreateDevIssuerKey, signDevToken, startDevIssuer } from "../../../src/auth/dev-issuer.js";
import { createTokenVerifier } from "../../../src/auth/token-verifier.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { hmacUserRef } from "./verifier-fixture.js";

let dir: string;
let keyPath: string;
let key: DevIssuerKey;
let devIssuer: DevIssuer;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "keybroker-dev-issuer-"));
  keyPath = join(dir, "nested", "dev-issuer-key.json");
  key = await loadOrCreateDevIssuerKey(keyPath);
  devIssuer = await startDevIssuer({ host: "127.0.0.1", port: 0, key });
});
afterAll(async () => {
  await devIssuer.close();
  await rm(dir, { recursive: true, force: true });
});

describe("dev issuer key file", () => {
  it("is created with mode 0600 and loaded again with the same kid", async () => {
    expect((await stat(keyPath)).mode & 0o777).toBe(0o600);
    const again = await loadOrCreateDevIssuerKey(keyPath);
    expect(again.kid).toBe(key.kid);
    expect(again.publicJwk.n).toBe(key.publicJwk.n);
  });

  it("publishes no private member in the public JWK", () => {
    expect(key.publicJwk).not.toHaveProperty("d");
    expect(key.publicJwk).toMatchObject({ kty: "RSA", alg: "RS256", kid: key.kid });
  });

  it("is refused when others can read it", async () => {
    const loose = join(dir, "loose.json");
    await loadOrCreateDevIssuerKey(loose);
    await chmod(loose, 0o644);
    expect((await brokerErrorOf(loadOrCreateDevIssuerKey(loose))).code).toBe("failed_precondition");
  });
});

describe("dev issuer server", () => {
  it("refuses to bind to a non-loopback host", async () => {
    for (const host of ["0.0.0.0", "::", "192.168.1.10"]) {
      expect((await brokerErrorOf(startDevIssuer({ host, port: 0, key }))).code).toBe("failed_precondition");
    }
  });

  it("serves its JWKS and a discovery document naming the issuer with a trailing slash", async () => {
    expect(devIssuer.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const jwks = (await (await fetch(devIssuer.jwksUrl)).json()) as { keys: Record<string, unknown>[] };
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).not.toHaveProperty("d");
    const discovery = (await (
      await fetch(`${devIssuer.issuer}.well-known/openid-configuration`)
    ).json()) as Record<string, unknown>;
    expect(discovery).toMatchObject({ issuer: devIssuer.issuer, jwks_uri: devIssuer.jwksUrl });
    expect((await fetch(`${devIssuer.issuer}other`)).status).toBe(404);
  });

  it("signs tokens that the real verifier accepts", async () => {
    const verifier = createTokenVerifier({
      issuer: devIssuer.issuer,
      audience: "https://keybroker.dev/api",
      jwksUrl: devIssuer.jwksUrl,
      requiredPermission: "secrets:use",
      clockToleranceSec: 5,
      jwksCacheMaxAgeMs: 60_000,
      jwksCooldownMs: 30_000,
      jwksTimeoutMs: 2_000,
      cacheMaxEntries: 10,
      deriveUserRef: hmacUserRef,
    });
    const token = await signDevToken(key, {
      issuer: devIssuer.issuer,
      audience: "https://keybroker.dev/api",
      subject: "dev|alice",
      permissions: ["secrets:read", "secrets:use"],
      expiresInSec: 60,
    });
    const user = await verifier.verify(token);
    expect(user.userRef).toEqual(hmacUserRef(devIssuer.issuer, "dev|alice"));
    expect(user.expiresAt - Math.floor(Date.now() / 1000)).toBeLessThanOrEqual(60);
  });
});
