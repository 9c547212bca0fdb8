import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import type { Keyring } from "../../../src/keys/keyring.js";
import { createKeyringCircuitBreaker } from "../../../src/keys/keyring-circuit-breaker.js";
import { brokerErrorOf } from "../../support/broker-errors.js";

const context = { purpose: "keybroker:user-data-key", user_ref: "00" };
const row = { wrapped: new Uint8Array(8), keyId: "local:1" };

/** A keyring whose decrypt fails with `failWith` while set, counting calls. */
function fakeKeyring() {
  const state = { calls: 0, failWith: undefined as BrokerError | undefined };
  const keyring: Keyring = {
    kind: "local",
    currentKeyId: () => "local:1",
    generateDataKey: async () => {
      throw new Error("not used");
    },
    async decrypt() {
      state.calls += 1;
      if (state.failWith !== undefined) throw state.failWith;
      return { plaintext: Buffer.alloc(32), keyId: "local:1" };
    },
    reEncrypt: async () => {
      throw new Error("not used");
    },
  };
  return { keyring, state };
}

const down = () => new BrokerError("unavailable", "key management service unavailable");

describe("keyring circuit breaker", () => {
  it("F6 opens after N consecutive unavailable calls and then fails fast with UNAVAILABLE without calling the keyring", async () => {
    const { keyring, state } = fakeKeyring();
    let now = 0;
    const breaker = createKeyringCircuitBreaker(keyring, {
      failureThreshold: 3,
      openMs: 1_000,
      now: () => now,
    });
    state.failWith = down();
    for (let i = 0; i < 3; i++)
      expect((await brokerErrorOf(breaker.decrypt(row, context))).code).toBe("unavailable");
    expect(state.calls).toBe(3);

    now = 999;
    const fast = await brokerErrorOf(breaker.decrypt(row, context));

    expect(fast.code).toBe("unavailable");
    expect(state.calls).toBe(3);
  });

  it("F6 lets one probe through after the open period; a good probe closes it, a failed one reopens it", async () => {
    const { keyring, state } = fakeKeyring();
    let now = 0;
    const breaker = createKeyringCircuitBreaker(keyring, {
      failureThreshold: 1,
      openMs: 1_000,
      now: () => now,
    });
    state.failWith = down();
    await brokerErrorOf(breaker.decrypt(row, context));

    now = 1_000;
    expect((await brokerErrorOf(breaker.decrypt(row, context))).code).toBe("unavailable"); // failed probe
    expect(state.calls).toBe(2);
    now = 1_500;
    await brokerErrorOf(breaker.decrypt(row, context)); // reopened: fails fast
    expect(state.calls).toBe(2);

    now = 2_000;
    state.failWith = undefined;
    await breaker.decrypt(row, context); // good probe
    await breaker.decrypt(row, context);
    expect(state.calls).toBe(4);
  });

  it("F6 admits one probe at a time: calls during the probe fail fast", async () => {
    const { keyring, state } = fakeKeyring();
    let now = 0;
    let release: () => void = () => {};
    const slow: Keyring = {
      ...keyring,
      async decrypt(wrapped, ctx, options) {
        if (state.failWith === undefined) await new Promise<void>((resolve) => (release = resolve));
        return keyring.decrypt(wrapped, ctx, options);
      },
    };
    const breaker = createKeyringCircuitBreaker(slow, { failureThreshold: 1, openMs: 10, now: () => now });
    state.failWith = down();
    await brokerErrorOf(breaker.decrypt(row, context));
    state.failWith = undefined;
    now = 10;

    const probe = breaker.decrypt(row, context);
    const during = await brokerErrorOf(breaker.decrypt(row, context));
    release();
    await probe;

    expect(during.code).toBe("unavailable");
    expect(state.calls).toBe(2);
  });

  it("F6 does not count refusals the KMS answered, or a caller's own deadline, as the keyring being down", async () => {
    const { keyring, state } = fakeKeyring();
    const breaker = createKeyringCircuitBreaker(keyring, { failureThreshold: 2, openMs: 60_000 });
    for (const code of ["failed_precondition", "data_loss", "deadline_exceeded"] as const) {
      state.failWith = new BrokerError(code, "refused");
      await brokerErrorOf(breaker.decrypt(row, context));
      await brokerErrorOf(breaker.decrypt(row, context));
    }
    state.failWith = undefined;

    await breaker.decrypt(row, context);

    expect(state.calls).toBe(7);
  });
});
