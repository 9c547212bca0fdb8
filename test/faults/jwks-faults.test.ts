import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import type { SignOptions } from "../support/test-issuer.js";
import { codeName, type UserSession, userSession } from "./fault-fixture.js";

// F57: the identity provider's JWKS endpoint fails while tokens still need verifying. An outage
// is UNAVAILABLE (try again), never UNAUTHENTICATED (which tells the app to log the user out);
// keys already fetched keep working. The harness sets a 1 s refetch cooldown; the JWKS fetch
// timeout is 500 ms here so a hanging issuer costs half a second.

const JWKS_TIMEOUT_MS = 500;
const COOLDOWN_MS = 1000; // KEYBROKER_JWKS_COOLDOWN_MS in the harness

describe("F57 JWKS faults", () => {
  let broker: BrokerHarness;
  let callerKey: string;

  beforeAll(async () => {
    broker = await startBroker("pglite", { KEYBROKER_JWKS_TIMEOUT_MS: String(JWKS_TIMEOUT_MS) });
    callerKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
  });

  afterEach(() => {
    broker.issuer.setStatus(null);
    broker.issuer.setDelayMs(0);
  });

  afterAll(async () => {
    await broker?.close();
  });

  /** A session with a token nobody has used yet (so the verified-token cache cannot answer). */
  async function withNewToken(opts?: SignOptions): Promise<UserSession> {
    const token = await broker.issuer.sign({ sub: "google-oauth2|faults-jwks", jti: randomUUID() }, opts);
    return userSession(broker.clients, { callerKey, token, secretValue: broker.upstreamCredentials.bearer });
  }

  // Runs first: the broker has never fetched the JWKS, so it has no key at all.
  it("F57 answers UNAVAILABLE, not UNAUTHENTICATED, when the JWKS endpoint is down and no key is cached", async () => {
    broker.issuer.setStatus(503);
    const fetchesBefore = broker.issuer.fetchCount();

    const list = await (await withNewToken()).list({ deadlineMs: 5000 });

    expect(codeName(list.code)).toBe("UNAVAILABLE");
    expect(broker.issuer.fetchCount()).toBeGreaterThan(fetchesBefore);

    broker.issuer.setStatus(null);
    expect(codeName((await (await withNewToken()).list()).code)).toBe("OK");
  });

  it("F57 keeps verifying new tokens with cached keys while the JWKS endpoint is down or hanging", async () => {
    expect(codeName((await (await withNewToken()).list()).code)).toBe("OK");
    const fetches = broker.issuer.fetchCount();
    broker.issuer.setStatus(503);

    const whileDown = await (await withNewToken()).list({ deadlineMs: 5000 });
    broker.issuer.setStatus(null);
    broker.issuer.setDelayMs(10_000);
    const whileHanging = await (await withNewToken()).list({ deadlineMs: 5000 });

    expect(codeName(whileDown.code)).toBe("OK");
    expect(codeName(whileHanging.code)).toBe("OK");
    expect(broker.issuer.fetchCount()).toBe(fetches);
  });

  it("F57 answers UNAVAILABLE within the JWKS timeout when a token's new key cannot be fetched from a hanging issuer", async () => {
    expect(codeName((await (await withNewToken()).list()).code)).toBe("OK");
    const kid = await broker.issuer.rotateKey(`rotated-${randomUUID()}`);
    await delay(COOLDOWN_MS + 100); // past the cooldown, so the unknown kid triggers a refetch
    broker.issuer.setDelayMs(5000);

    const hanging = await (await withNewToken({ kid })).list({ deadlineMs: 5000 });

    expect(codeName(hanging.code)).toBe("UNAVAILABLE");
    expect(hanging.ms).toBeLessThan(JWKS_TIMEOUT_MS + 1000);

    broker.issuer.setDelayMs(0);
    expect(codeName((await (await withNewToken({ kid })).list()).code)).toBe("OK");
  });
});
