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

describe("configuration: DPoP (issue 14)", () => {
  it("is off by default: no origin, so DPoP-bound tokens are refused and unbound ones accepted", () => {
    expect(loadConfig(production).auth.dpop).toBeUndefined();
  });

  it("reads the origin, the requirement, the proof age and the clock skew", () => {
    const config = loadConfig({
      ...production,
      KEYBROKER_DPOP_HTU_ORIGIN: "https://keybroker.example.com",
      KEYBROKER_DPOP_REQUIRED: "1",
      KEYBROKER_DPOP_PROOF_MAX_AGE_SEC: "30",
      KEYBROKER_DPOP_CLOCK_SKEW_SEC: "2",
    });
    expect(config.auth.dpop).toEqual({
      required: true,
      htuOrigin: "https://keybroker.example.com",
      maxAgeSec: 30,
      clockSkewSec: 2,
    });
  });

  it("refuses requiring DPoP without an origin, and an origin with a path, a query or plain http off loopback", () => {
    expect(problemsOf({ ...production, KEYBROKER_DPOP_REQUIRED: "1" })).toEqual([
      "KEYBROKER_DPOP_REQUIRED: needs KEYBROKER_DPOP_HTU_ORIGIN",
    ]);
    for (const origin of [
      "https://keybroker.example.com/api",
      "https://keybroker.example.com?x=1",
      "http://keybroker.example.com",
      "https://user@keybroker.example.com",
    ]) {
      expect(problemsOf({ ...production, KEYBROKER_DPOP_HTU_ORIGIN: origin }), origin).toHaveLength(1);
    }
    expect(problemsOf({ ...production, KEYBROKER_DPOP_PROOF_MAX_AGE_SEC: "3600" })).toHaveLength(1);
  });
});
