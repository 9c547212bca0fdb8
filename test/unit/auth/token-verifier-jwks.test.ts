import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { brokerErrorOf } from "../../support/broker-errors.js";
import type { TestIssuer } from "../../support/test-issuer.js";
import { startTestIssuer } from "../../support/test-issuer.js";
import { b64url, verifierFor, withHeader } from "./verifier-fixture.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let issuer: TestIssuer;
beforeEach(async () => {
  issuer = await startTestIssuer();
});
afterEach(async () => {
  await issuer.close();
});

describe("token verifier: JWKS fetching", () => {
  it("A15 rejects malformed and oversized tokens before any JWKS fetch", async () => {
    const { verifier } = verifierFor(issuer);
    const [h, p, s] = (await issuer.sign()).split(".");
    const malformed = [
      `${h}.${p}.${s}.${s}`,
      `${h}.${p}*.${s}`,
      `${h}A.${p}.${s}`,
      `${h}.${"A".repeat(1024 * 1024)}.${s}`,
      `${b64url({ alg: "RS256", kid: "k", pad: "x".repeat(1024 * 1024) })}.${p}.${s}`,
      `${b64url('{"alg":"RS256","kid":"k","kid":"j"}')}.${p}.${s}`,
    ];
    for (const token of malformed) {
      expect((await brokerErrorOf(verifier.verify(token))).code).toBe("unauthenticated");
    }
    expect(issuer.fetchCount()).toBe(0);
  });

  it("A5 lets 1,000 unknown kids cause exactly one refetch once the cooldown has passed", async () => {
    // The cooldown must outlast the 1,000 rejections below (~50 ms) with a wide margin.
    const { verifier } = verifierFor(issuer, { jwksCooldownMs: 1_000 });
    const token = await issuer.sign();
    await verifier.verify(token);
    expect(issuer.fetchCount()).toBe(1);
    await sleep(1_050);
    const junk = (i: number) => withHeader(token, { alg: "RS256", kid: `junk-${i}` });
    const concurrent = await Promise.all(
      Array.from({ length: 500 }, (_, i) => brokerErrorOf(verifier.verify(junk(i)))),
    );
    for (let i = 500; i < 1_000; i++) await brokerErrorOf(verifier.verify(junk(i)));
    expect(concurrent.every((err) => err.code === "unauthenticated")).toBe(true);
    expect(issuer.fetchCount()).toBe(2);
  });

  it("A14 refetches exactly once for a rotated key, then verifies with it", async () => {
    const { verifier } = verifierFor(issuer, { jwksCooldownMs: 100 });
    await verifier.verify(await issuer.sign());
    expect(issuer.fetchCount()).toBe(1);
    await issuer.rotateKey();
    await sleep(150);
    await expect(verifier.verify(await issuer.sign({ jti: "a" }))).resolves.toBeDefined();
    await expect(verifier.verify(await issuer.sign({ jti: "b" }))).resolves.toBeDefined();
    expect(issuer.fetchCount()).toBe(2);
  });

  it("A14 verifies when two published keys share a kid", async () => {
    const { verifier } = verifierFor(issuer);
    const oldToken = await issuer.sign({ jti: "old" });
    await issuer.rotateKey(issuer.currentKid());
    const newToken = await issuer.sign({ jti: "new" });
    await expect(verifier.verify(newToken)).resolves.toBeDefined();
    await expect(verifier.verify(oldToken)).resolves.toBeDefined();
  });

  it("W1 A14 stops accepting a token signed with a dropped key once the keys are refetched", async () => {
    const { verifier } = verifierFor(issuer, { jwksCacheMaxAgeMs: 100 });
    const oldKid = issuer.currentKid();
    const oldToken = await issuer.sign({ jti: "old" });
    await verifier.verify(oldToken);
    await issuer.rotateKey();
    issuer.dropKey(oldKid);
    await sleep(150);
    // Signed with the dropped key itself (W1: signing with the new key proved nothing).
    const signedWithDropped = await issuer.sign({ jti: "old-2" }, { kid: oldKid, signWith: oldKid });
    const err = await brokerErrorOf(verifier.verify(signedWithDropped));
    expect(err.code).toBe("unauthenticated");
    // The same key still verifies tokens once it is published again: the refusal was the drop.
    issuer.restoreKey(oldKid);
    await sleep(150);
    await expect(
      verifier.verify(await issuer.sign({ jti: "old-3" }, { signWith: oldKid })),
    ).resolves.toBeDefined();
  });
});

describe("token verifier: signing-key rotation behind a junk kid (F4)", () => {
  it("F4 answers a new kid that arrives while a junk kid's refetch is cooling down with a retryable UNAVAILABLE, then verifies it", async () => {
    const { verifier } = verifierFor(issuer, { jwksCooldownMs: 1_500 });
    const publishNewKey = await issuer.prepareKey();
    const token = await issuer.sign();
    await verifier.verify(token);
    await sleep(1_550);
    // A junk kid spends the refetch (still UNAUTHENTICATED: the issuer was just asked)...
    const junk = await brokerErrorOf(verifier.verify(withHeader(token, { alg: "RS256", kid: "junk" })));
    expect(junk.code).toBe("unauthenticated");
    // ...then the issuer starts signing with a new key: its first tokens are not refused as forged.
    publishNewKey();
    const fresh = await issuer.sign({ jti: "after-rotation" });
    const early = await brokerErrorOf(verifier.verify(fresh));
    expect(early).toMatchObject({
      code: "unavailable",
      message: "token signing key not yet known; retry shortly",
    });
    await sleep(1_550);
    await expect(verifier.verify(fresh)).resolves.toBeDefined();
  });

  it("F4 refreshes the key set in the background, so a key published ahead of use is known before its first token", async () => {
    const { verifier } = verifierFor(issuer, { jwksCooldownMs: 60_000, jwksRefreshAheadMs: 100 });
    const oldKid = issuer.currentKid();
    await verifier.verify(await issuer.sign({ jti: "first" }));
    expect(issuer.fetchCount()).toBe(1);
    await issuer.rotateKey(); // published, not yet used by the verifier
    await sleep(150);
    // A token under the old key, verified from the cached set, sets off the refresh behind it.
    await verifier.verify(await issuer.sign({ jti: "second" }, { signWith: oldKid }));
    for (let i = 0; i < 50 && issuer.fetchCount() < 2; i++) await sleep(20);
    expect(issuer.fetchCount()).toBe(2);
    // Well inside the unknown-kid cooldown, and yet the new key verifies: it was fetched ahead.
    await expect(verifier.verify(await issuer.sign({ jti: "third" }))).resolves.toBeDefined();
    expect(issuer.fetchCount()).toBe(2);
  });
});

describe("token verifier: identity provider outages", () => {
  it("A13 answers UNAVAILABLE, not UNAUTHENTICATED, when the JWKS returns 500 and nothing is cached", async () => {
    const { verifier } = verifierFor(issuer);
    issuer.setStatus(500);
    const err = await brokerErrorOf(verifier.verify(await issuer.sign()));
    expect(err).toMatchObject({ code: "unavailable", message: "identity provider keys unavailable" });
  });

  it("A13 answers UNAVAILABLE when the JWKS times out", async () => {
    const { verifier } = verifierFor(issuer, { jwksTimeoutMs: 100 });
    issuer.setDelayMs(2_000);
    const started = Date.now();
    const err = await brokerErrorOf(verifier.verify(await issuer.sign()));
    expect(err.code).toBe("unavailable");
    expect(Date.now() - started).toBeLessThan(1_500);
  });

  it("A13 answers UNAVAILABLE when the JWKS host refuses connections", async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, "127.0.0.1", resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const { verifier } = verifierFor(issuer, { jwksUrl: `http://127.0.0.1:${port}/.well-known/jwks.json` });
    expect((await brokerErrorOf(verifier.verify(await issuer.sign()))).code).toBe("unavailable");
  });

  it("A13 answers UNAVAILABLE when the JWKS is a 200 that is not JSON, or redirects", async () => {
    const { verifier } = verifierFor(issuer);
    issuer.setStatus(200);
    expect((await brokerErrorOf(verifier.verify(await issuer.sign()))).code).toBe("unavailable");
    issuer.setStatus(302);
    expect((await brokerErrorOf(verifier.verify(await issuer.sign({ jti: "x" })))).code).toBe("unavailable");
  });

  it("A13 keeps verifying with cached keys during an outage, up to jwksCacheMaxAgeMs, then UNAVAILABLE", async () => {
    const { verifier } = verifierFor(issuer, { jwksCacheMaxAgeMs: 500 });
    await verifier.verify(await issuer.sign({ jti: "warm" }));
    issuer.setStatus(503);
    await expect(verifier.verify(await issuer.sign({ jti: "during" }))).resolves.toBeDefined();
    await sleep(550);
    expect((await brokerErrorOf(verifier.verify(await issuer.sign({ jti: "after" })))).code).toBe(
      "unavailable",
    );
  });

  it("does not cache an outage: the same token verifies once the JWKS is back", async () => {
    const { verifier } = verifierFor(issuer);
    const token = await issuer.sign();
    issuer.setStatus(500);
    expect((await brokerErrorOf(verifier.verify(token))).code).toBe("unavailable");
    issuer.setStatus(null);
    await expect(verifier.verify(token)).resolves.toBeDefined();
  });
});

describe("token verifier: cancellation", () => {
  it("F52 stops waiting with DEADLINE_EXCEEDED when the call's deadline passes", async () => {
    const { verifier } = verifierFor(issuer);
    issuer.setDelayMs(1_500);
    const started = Date.now();
    const err = await brokerErrorOf(
      verifier.verify(await issuer.sign(), { signal: AbortSignal.timeout(50) }),
    );
    expect(err.code).toBe("deadline_exceeded");
    expect(Date.now() - started).toBeLessThan(1_000);
  });

  it("does no work for an already-cancelled call", async () => {
    const { verifier } = verifierFor(issuer);
    const controller = new AbortController();
    controller.abort();
    const err = await brokerErrorOf(verifier.verify(await issuer.sign(), { signal: controller.signal }));
    expect(err.code).toBe("unavailable");
    expect(issuer.fetchCount()).toBe(0);
  });
});
