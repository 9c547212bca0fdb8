import { setTimeout as delay } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import {
  type CallOutcome,
  codeName,
  eventually,
  secretIdOf,
  type UserSession,
  userSession,
} from "./fault-fixture.js";

// C35, F52, F57 through the whole broker: the upstream hangs, drips, resets or answers 504.
// Every call ends with a definite status within the provider's 3 s timeout (the harness's
// test-upstream provider); a POST is never retried, and a failed one says its outcome is
// unknown; the next call to the same upstream works.

const PROVIDER_TIMEOUT_MS = 3000;
const UNKNOWN_OUTCOME = "outcome unknown";

describe("C35 F52 F57 upstream faults", () => {
  let broker: BrokerHarness;
  let user: UserSession;
  let secretId: string;

  beforeAll(async () => {
    broker = await startBroker("pglite");
    const callerKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    const token = await broker.tokenFor("google-oauth2|faults-upstream");
    user = userSession(broker.clients, { callerKey, token, secretValue: broker.upstreamCredentials.bearer });
    const put = await user.put("upstream");
    expect(codeName(put.code)).toBe("OK");
    secretId = secretIdOf(put);
  });

  afterAll(async () => {
    await broker?.close();
  });

  /** The same upstream serves the next call normally: nothing in the broker is left broken. */
  async function expectNextCallServed(): Promise<void> {
    const next = await user.call(secretId, "GET", "/ok", { deadlineMs: 5000 });
    expect(codeName(next.code)).toBe("OK");
    expect(next.response?.status).toBe(200);
  }

  function expectNoLeak(outcome: CallOutcome): void {
    const text = `${outcome.details}\n${broker.logs.text()}`;
    expect(findLeaks(text, [broker.upstreamCredentials.bearer])).toEqual([]);
  }

  /** Waits a little past the failure: a retry, if there were one, would show up by then. */
  async function requestsSoonAfter(): Promise<number> {
    await delay(300);
    return broker.upstream.requests.length;
  }

  it("C35 answers DEADLINE_EXCEEDED, outcome unknown, when the upstream hangs on a POST, and sends it once", async () => {
    broker.upstream.reset();
    const call = await user.call(secretId, "POST", "/hang", { deadlineMs: 10_000 });

    expect(codeName(call.code)).toBe("DEADLINE_EXCEEDED");
    expect(call.details).toContain(UNKNOWN_OUTCOME);
    expect(call.ms).toBeGreaterThanOrEqual(PROVIDER_TIMEOUT_MS - 100);
    expect(call.ms).toBeLessThan(PROVIDER_TIMEOUT_MS + 1500);
    expect(await requestsSoonAfter()).toBe(1);
    expectNoLeak(call);
    await expectNextCallServed();
  });

  it("F52 ends a call to a dripping upstream at the client's shorter deadline, and hangs up on the upstream at once", async () => {
    broker.upstream.reset();
    const call = await user.call(secretId, "GET", "/slow-drip", { deadlineMs: 600 });

    expect(codeName(call.code)).toBe("DEADLINE_EXCEEDED");
    expect(call.ms).toBeLessThan(1500);
    // The broker hung up on the upstream once the caller was gone, not at the provider timeout.
    expect(await eventually(async () => broker.upstream.abandonedResponses() === 1, 1500, 50)).toBe(true);
    expect(broker.upstream.requests).toHaveLength(1);
    await expectNextCallServed();
  });

  it("C35 answers DEADLINE_EXCEEDED, outcome unknown, at the provider timeout when the upstream drips its body forever", async () => {
    broker.upstream.reset();
    const call = await user.call(secretId, "POST", "/slow-drip", { deadlineMs: 10_000 });

    expect(codeName(call.code)).toBe("DEADLINE_EXCEEDED");
    expect(call.details).toContain(UNKNOWN_OUTCOME);
    expect(call.ms).toBeLessThan(PROVIDER_TIMEOUT_MS + 1500);
    expect(await requestsSoonAfter()).toBe(1);
    expect(broker.upstream.abandonedResponses()).toBe(1);
    expectNoLeak(call);
    await expectNextCallServed();
  });

  it("C35 answers UNAVAILABLE, outcome unknown, when the upstream resets the connection on a POST, and does not retry", async () => {
    broker.upstream.reset();
    const call = await user.call(secretId, "POST", "/reset", { deadlineMs: 5000 });

    expect(codeName(call.code)).toBe("UNAVAILABLE");
    expect(call.details).toContain(UNKNOWN_OUTCOME);
    expect(await requestsSoonAfter()).toBe(1);
    expectNoLeak(call);
    await expectNextCallServed();
  });

  it("C35 passes a 504 answer to a POST back as the upstream's status, sent exactly once", async () => {
    broker.upstream.reset();
    const call = await user.call(secretId, "POST", "/status-504", { deadlineMs: 5000 });

    expect(codeName(call.code)).toBe("OK");
    expect(call.response?.status).toBe(504);
    expect(await requestsSoonAfter()).toBe(1);
    expectNoLeak(call);
    await expectNextCallServed();
  });
});
