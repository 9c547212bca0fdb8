import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import { createKmsRetry, type RetryPolicy } from "../../../src/rotation/kms-retry.js";
import type { RateLimiter } from "../../../src/rotation/rate-limiter.js";

const logger = createLogger({ level: "silent" });
const quick: RetryPolicy = { attempts: 3, baseDelayMs: 1, maxDelayMs: 2 };

/** A limiter that never waits and counts what the retry loop told it. */
function countingLimiter() {
  const seen = { takes: 0, slowDowns: 0, speedUps: 0 };
  const limiter: RateLimiter = {
    take: async () => {
      seen.takes += 1;
    },
    slowDown: () => {
      seen.slowDowns += 1;
    },
    speedUp: () => {
      seen.speedUps += 1;
    },
    currentRate: () => 1,
  };
  return { limiter, seen };
}

/** A KMS call that answers `unavailable` `failures` times, then succeeds. */
function flakyCall(failures: number) {
  let calls = 0;
  return {
    calls: () => calls,
    call: async () => {
      calls += 1;
      if (calls <= failures) throw new BrokerError("unavailable", "throttled");
      return "wrapped";
    },
  };
}

describe("KMS retry", () => {
  it("retries an unavailable KMS, slowing the rate limit down, and counts the retries", async () => {
    const { limiter, seen } = countingLimiter();
    const kms = createKmsRetry({ limiter, retry: quick, logger });
    const flaky = flakyCall(2);

    expect(await kms.call(flaky.call)).toBe("wrapped");

    expect(flaky.calls()).toBe(3);
    expect(kms.retries()).toBe(2);
    expect(seen).toEqual({ takes: 3, slowDowns: 2, speedUps: 1 });
  });

  it("gives up after the policy's attempts with the KMS error", async () => {
    const { limiter } = countingLimiter();
    const kms = createKmsRetry({ limiter, retry: quick, logger });
    const flaky = flakyCall(10);

    await expect(kms.call(flaky.call)).rejects.toMatchObject({ code: "unavailable" });
    expect(flaky.calls()).toBe(3);
  });

  it("never retries a misconfigured key or a tampered row", async () => {
    const { limiter } = countingLimiter();
    const kms = createKmsRetry({ limiter, retry: quick, logger });
    for (const code of ["failed_precondition", "data_loss"] as const) {
      let calls = 0;
      const call = async () => {
        calls += 1;
        throw new BrokerError(code, "no");
      };
      await expect(kms.call(call)).rejects.toMatchObject({ code });
      expect(calls).toBe(1);
    }
    expect(kms.retries()).toBe(0);
  });

  it("stops backing off when the job is stopped, with deadline_exceeded", async () => {
    const { limiter } = countingLimiter();
    const stop = new AbortController();
    const kms = createKmsRetry({
      limiter,
      retry: { attempts: 5, baseDelayMs: 60_000, maxDelayMs: 60_000 },
      logger,
      signal: stop.signal,
    });
    const pending = kms.call(flakyCall(10).call);
    setTimeout(() => stop.abort(), 5);

    await expect(pending).rejects.toMatchObject({ code: "deadline_exceeded" });
  });
});
