import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config/config.js";
import { configProblemsOf as problemsOf, PRODUCTION_ENV as production } from "../../support/config-env.js";

describe("configuration: user PINs (issue 14 item 4)", () => {
  it("I147 defaults: 5 wrong PINs, a 1 s doubling backoff, a 15-minute lockout, scrypt N = 2^16", () => {
    expect(loadConfig(production).pin).toEqual({
      maxAttempts: 5,
      backoffMs: 1_000,
      lockoutMs: 900_000,
      scryptLogN: 16,
    });
  });

  it("I147 refuses a scrypt cost below 2^15 or above 2^17, and a lockout under a second", () => {
    const problems = problemsOf({
      ...production,
      KEYBROKER_PIN_SCRYPT_LOG_N: "14",
      KEYBROKER_PIN_LOCKOUT_MS: "10",
      KEYBROKER_PIN_MAX_ATTEMPTS: "0",
    });
    expect(problems.join("\n")).toMatch(/KEYBROKER_PIN_SCRYPT_LOG_N/);
    expect(problems.join("\n")).toMatch(/KEYBROKER_PIN_LOCKOUT_MS/);
    expect(problems.join("\n")).toMatch(/KEYBROKER_PIN_MAX_ATTEMPTS/);
    expect(problemsOf({ ...production, KEYBROKER_PIN_SCRYPT_LOG_N: "18" }).join("\n")).toMatch(
      /KEYBROKER_PIN_SCRYPT_LOG_N/,
    );
  });
});
