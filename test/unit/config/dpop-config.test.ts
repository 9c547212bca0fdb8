import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config/config.js";
import { configProblemsOf as problemsOf, PRODUCTION_ENV as production } from "../../support/config-env.js";

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
