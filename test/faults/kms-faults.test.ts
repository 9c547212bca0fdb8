import { randomUUID } from "node:crypto";
import { setTimeout as delay } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { type CallOutcome, codeName, secretIdOf, type UserSession, userSession } from "./fault-fixture.js";

// F52, F53, F57: the real AWS SDK against the local KMS server, which throttles, fails, slows
// down, goes away or has its key disabled on command. The data-key cache serves each key once
// (KEYBROKER_DATA_KEY_CACHE_MAX_USES=1) and every test uses a fresh user, so every call that
// needs a key really asks KMS and the cache cannot hide a fault.

const MAX_ATTEMPTS = 2; // KEYBROKER_KMS_MAX_ATTEMPTS in the harness
const DEADLINE_MS = 5000;

describe("F52 F53 F57 KMS faults", () => {
  let broker: BrokerHarness;
  let callerKey: string;

  beforeAll(async () => {
    broker = await startBroker("pglite", { KEYBROKER_DATA_KEY_CACHE_MAX_USES: "1" });
    callerKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
  });

  afterEach(() => {
    broker.kms.setFaults({ throttleNext: 0, failNext: 0, latencyMs: 0, down: false });
    broker.kms.enableKey("alias/keybroker");
  });

  afterAll(async () => {
    await broker?.close();
  });

  async function freshUser(): Promise<UserSession> {
    const token = await broker.tokenFor(`google-oauth2|faults-kms-${randomUUID()}`);
    return userSession(broker.clients, {
      callerKey,
      token,
      secretValue: broker.upstreamCredentials.bearer,
    });
  }

  /** A fresh user with one stored secret, and no data key left in the cache. */
  async function userWithSecret(): Promise<{ user: UserSession; secretId: string }> {
    const user = await freshUser();
    const put = await user.put("kms-fault");
    expect(codeName(put.code)).toBe("OK");
    // The put seeded the cache with one use; spend it, so the next call must ask KMS.
    expect(codeName((await user.list()).code)).toBe("OK");
    broker.kms.resetCounts();
    broker.upstream.reset();
    return { user, secretId: secretIdOf(put) };
  }

  function expectNoLeak(outcomes: readonly CallOutcome[]): void {
    const text = `${outcomes.map((o) => o.details).join("\n")}\n${broker.logs.text()}`;
    expect(findLeaks(text, [broker.upstreamCredentials.bearer])).toEqual([]);
  }

  it("F53 retries a throttled GenerateDataKey once, within the deadline, and the call succeeds", async () => {
    const user = await freshUser();
    broker.kms.resetCounts();
    broker.kms.setFaults({ throttleNext: 1 });

    const put = await user.put("throttled-once", { deadlineMs: DEADLINE_MS });

    expect(codeName(put.code)).toBe("OK");
    expect(broker.kms.callCount("GenerateDataKey")).toBe(2);
  });

  it("F53 answers UNAVAILABLE within the deadline after a bounded number of attempts when KMS keeps throttling", async () => {
    const user = await freshUser();
    broker.kms.resetCounts();
    broker.kms.setFaults({ throttleNext: 1000 });

    const put = await user.put("throttled", { deadlineMs: DEADLINE_MS });

    expect(codeName(put.code)).toBe("UNAVAILABLE");
    expect(put.ms).toBeLessThan(DEADLINE_MS);
    expect(broker.kms.callCount("GenerateDataKey")).toBe(MAX_ATTEMPTS);

    broker.kms.setFaults({ throttleNext: 0 });
    expect(codeName((await user.put("after-throttling")).code)).toBe("OK");
    expectNoLeak([put]);
  });

  it("F57 answers UNAVAILABLE when KMS fails with internal errors, for writes and for proxied calls, and sends nothing upstream", async () => {
    const { user, secretId } = await userWithSecret();
    broker.kms.setFaults({ failNext: 1000 });

    const call = await user.call(secretId, "GET", "/ok", { deadlineMs: DEADLINE_MS });
    const put = await (await freshUser()).put("kms-500", { deadlineMs: DEADLINE_MS });

    expect(codeName(call.code)).toBe("UNAVAILABLE");
    expect(codeName(put.code)).toBe("UNAVAILABLE");
    expect(broker.kms.callCount("Decrypt")).toBe(MAX_ATTEMPTS);
    expect(broker.kms.callCount("GenerateDataKey")).toBe(MAX_ATTEMPTS);
    expect(broker.upstream.requests).toHaveLength(0);

    broker.kms.setFaults({ failNext: 0 });
    const again = await user.call(secretId, "GET", "/ok");
    expect(codeName(again.code)).toBe("OK");
    expectNoLeak([call, put]);
  });

  it("F52 answers DEADLINE_EXCEEDED when KMS is slower than the client's deadline, and runs nothing after the cancellation", async () => {
    const { user, secretId } = await userWithSecret();
    const newUser = await freshUser();
    broker.kms.setFaults({ latencyMs: 1500 });

    const [call, put] = await Promise.all([
      user.call(secretId, "POST", "/ok", { deadlineMs: 400 }),
      newUser.put("slow-kms", { deadlineMs: 400 }),
    ]);
    expect(codeName(call.code)).toBe("DEADLINE_EXCEEDED");
    expect(codeName(put.code)).toBe("DEADLINE_EXCEEDED");
    expect(Math.max(call.ms, put.ms)).toBeLessThan(1000);

    // Let KMS's slow answers arrive (or not): nothing may act on them once the call is gone.
    await delay(1700);
    broker.kms.setFaults({ latencyMs: 0 });
    expect(broker.upstream.requests).toHaveLength(0);
    expect(broker.kms.callCount("Decrypt")).toBe(1);
    expect(broker.kms.callCount("GenerateDataKey")).toBe(1);
    const stored = await broker.database.db
      .selectFrom("secrets")
      .select("id")
      .where("label", "=", "slow-kms")
      .execute();
    expect(stored).toEqual([]);
    expect(codeName((await user.call(secretId, "GET", "/ok")).code)).toBe("OK");
  });

  it("F57 answers UNAVAILABLE without hanging when KMS is down, and recovers when it is back", async () => {
    const { user, secretId } = await userWithSecret();
    broker.kms.setFaults({ down: true });

    const call = await user.call(secretId, "GET", "/ok", { deadlineMs: DEADLINE_MS });
    const put = await (await freshUser()).put("kms-down", { deadlineMs: DEADLINE_MS });

    expect(codeName(call.code)).toBe("UNAVAILABLE");
    expect(codeName(put.code)).toBe("UNAVAILABLE");
    expect(Math.max(call.ms, put.ms)).toBeLessThan(DEADLINE_MS);
    expect(broker.upstream.requests).toHaveLength(0);

    broker.kms.setFaults({ down: false });
    expect(codeName((await user.call(secretId, "GET", "/ok")).code)).toBe("OK");
    expectNoLeak([call, put]);
  });

  it("F53 answers FAILED_PRECONDITION without retrying when the master key is disabled", async () => {
    const { user, secretId } = await userWithSecret();
    broker.kms.disableKey("alias/keybroker");

    const call = await user.call(secretId, "GET", "/ok", { deadlineMs: DEADLINE_MS });
    const put = await (await freshUser()).put("key-disabled", { deadlineMs: DEADLINE_MS });

    expect(codeName(call.code)).toBe("FAILED_PRECONDITION");
    expect(codeName(put.code)).toBe("FAILED_PRECONDITION");
    expect(broker.kms.callCount("Decrypt")).toBe(1);
    expect(broker.kms.callCount("GenerateDataKey")).toBe(1);
    expect(broker.upstream.requests).toHaveLength(0);

    broker.kms.enableKey("alias/keybroker");
    expect(codeName((await user.call(secretId, "GET", "/ok")).code)).toBe("OK");
    expectNoLeak([call, put]);
  });
});

describe("F6 a hung or failing KMS: bounded calls and a circuit breaker", () => {
  let broker: BrokerHarness;
  let callerKey: string;
  const OPEN_MS = 1_500;

  beforeAll(async () => {
    broker = await startBroker("pglite", {
      KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS: "300",
      KEYBROKER_KEYRING_BREAKER_FAILURES: "2",
      KEYBROKER_KEYRING_BREAKER_OPEN_MS: String(OPEN_MS),
    });
    callerKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
  });

  afterAll(async () => {
    broker?.kms.setFaults({ latencyMs: 0, down: false });
    await broker?.close();
  });

  async function freshUser(): Promise<UserSession> {
    const token = await broker.tokenFor(`google-oauth2|faults-kms-f6-${randomUUID()}`);
    return userSession(broker.clients, { callerKey, token, secretValue: broker.upstreamCredentials.bearer });
  }

  it("F6 bounds a new user's call on a hung KMS by the per-attempt timeout, opens the breaker, fails fast without calling KMS, serves cached users, and recovers after a probe", async () => {
    // A user whose data key is cached before the outage.
    const cached = await freshUser();
    const put = await cached.put("cached-before-outage");
    expect(codeName(put.code)).toBe("OK");
    const secretId = secretIdOf(put);

    broker.kms.setFaults({ latencyMs: 10_000 });
    broker.kms.resetCounts();
    // No caller deadline: only the per-attempt timeout (2 attempts × 300 ms) bounds these.
    const first = await (await freshUser()).put("hung-1");
    const second = await (await freshUser()).put("hung-2");
    expect(codeName(first.code)).toBe("UNAVAILABLE");
    expect(codeName(second.code)).toBe("UNAVAILABLE");
    expect(Math.max(first.ms, second.ms)).toBeLessThan(2_500);
    const callsWhenOpened = broker.kms.callCount("GenerateDataKey");

    const fast = await (await freshUser()).put("breaker-open");
    expect(codeName(fast.code)).toBe("UNAVAILABLE");
    expect(fast.ms).toBeLessThan(250);
    expect(broker.kms.callCount("GenerateDataKey")).toBe(callsWhenOpened);
    expect(codeName((await cached.call(secretId, "GET", "/ok")).code)).toBe("OK");

    broker.kms.setFaults({ latencyMs: 0 });
    await delay(OPEN_MS);
    expect(codeName((await (await freshUser()).put("probe")).code)).toBe("OK");
    expect(codeName((await (await freshUser()).put("after-probe")).code)).toBe("OK");
    expectNoLeakIn(broker, [first, second, fast]);
  });
});

function expectNoLeakIn(broker: BrokerHarness, outcomes: readonly CallOutcome[]): void {
  const text = `${outcomes.map((o) => o.details).join("\n")}\n${broker.logs.text()}`;
  expect(findLeaks(text, [broker.upstreamCredentials.bearer])).toEqual([]);
}
