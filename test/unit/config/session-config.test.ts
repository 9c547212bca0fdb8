import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config/config.js";
import { configProblemsOf as problemsOf, PRODUCTION_ENV as production } from "../../support/config-env.js";

describe("configuration: logout and token age (issue 14)", () => {
  it("I134 defaults: no logout audience (logout tokens refused), no maximum token age, a 2-minute data-key idle timeout, fail closed after 10 s", () => {
    const config = loadConfig(production);
    expect(config.sessions).toEqual({
      logoutAudiences: undefined,
      logoutTokenMaxAgeSec: 300,
      revocationMaxStalenessMs: 10_000,
    });
    expect(config.auth.maxTokenAgeSec).toBeUndefined();
    expect(config.dataKeyCache.idleMs).toBe(120_000);
  });

  it("I134 reads the maximum token age, the idle timeout and the logout audiences", () => {
    const config = loadConfig({
      ...production,
      KEYBROKER_MAX_TOKEN_AGE_SEC: "900",
      KEYBROKER_DATA_KEY_IDLE_TIMEOUT_MS: "60000",
      KEYBROKER_LOGOUT_AUDIENCES: "app-client-1, app-client-2",
      KEYBROKER_REVOCATION_MAX_STALENESS_MS: "3000",
    });
    expect(config.auth.maxTokenAgeSec).toBe(900);
    expect(config.dataKeyCache.idleMs).toBe(60_000);
    expect(config.sessions.logoutAudiences).toEqual(["app-client-1", "app-client-2"]);
    expect(config.sessions.revocationMaxStalenessMs).toBe(3_000);
  });

  it("I127 refuses logout audiences that are empty or name the API (an access token's audience)", () => {
    expect(problemsOf({ ...production, KEYBROKER_LOGOUT_AUDIENCES: "app-client," })).toEqual([
      "KEYBROKER_LOGOUT_AUDIENCES: comma-separated client ids, none empty",
    ]);
    expect(problemsOf({ ...production, KEYBROKER_LOGOUT_AUDIENCES: production.AUTH0_AUDIENCE })).toEqual([
      "KEYBROKER_LOGOUT_AUDIENCES: must name app client ids, not AUTH0_AUDIENCE",
    ]);
  });

  it("I134 refuses a maximum token age under a minute and an idle timeout under a second", () => {
    const problems = problemsOf({
      ...production,
      KEYBROKER_MAX_TOKEN_AGE_SEC: "30",
      KEYBROKER_DATA_KEY_IDLE_TIMEOUT_MS: "10",
    });
    expect(problems).toHaveLength(2);
    expect(problems.join("\n")).toContain("KEYBROKER_MAX_TOKEN_AGE_SEC");
    expect(problems.join("\n")).toContain("KEYBROKER_DATA_KEY_IDLE_TIMEOUT_MS");
  });
});
