import { describe, expect, it } from "vitest";
import { ConfigError, loadConfig } from "../../../src/config/config.js";

const production = {
  DATABASE_URL: "postgres://keybroker@db.internal:5432/keybroker",
  KEYBROKER_KEYRING: "aws-kms",
  KEYBROKER_KMS_KEY_ID: "alias/keybroker",
  AWS_REGION: "eu-west-1",
  AUTH0_ISSUER: "https://tenant.eu.auth0.com/",
  AUTH0_AUDIENCE: "https://keybroker.example.com/api",
  AUTH0_REQUIRED_PERMISSION: "keybroker:use",
};

function problemsOf(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error("expected a ConfigError");
}

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
