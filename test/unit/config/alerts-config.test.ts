import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config/config.js";
import { configProblemsOf as problemsOf, PRODUCTION_ENV as production } from "../../support/config-env.js";

describe("alert and suspension configuration", () => {
  it("H122 suspends nothing and posts no webhook unless configured", () => {
    const config = loadConfig(production);

    expect(config.alerts).toEqual({ webhook: undefined, suspendOn: [] });
  });

  it("H122 reads the chosen signals for automatic suspension, and refuses an unknown name", () => {
    const config = loadConfig({
      ...production,
      KEYBROKER_SUSPEND_ON_SIGNALS: "probing, dangerous_first_use",
    });
    expect(config.alerts.suspendOn).toEqual(["probing", "dangerous_first_use"]);

    expect(problemsOf({ ...production, KEYBROKER_SUSPEND_ON_SIGNALS: "probing,many_users" })).toEqual([
      expect.stringMatching(/^KEYBROKER_SUSPEND_ON_SIGNALS: unknown signal "many_users"/),
    ]);
  });

  it("H123 requires an https webhook URL and a secret file in production", () => {
    expect(
      problemsOf({ ...production, KEYBROKER_ALERT_WEBHOOK_URL: "http://alerts.example.com/hook" }),
    ).toEqual([
      expect.stringMatching(/^KEYBROKER_ALERT_WEBHOOK_URL: must be https/),
      expect.stringMatching(/^KEYBROKER_ALERT_WEBHOOK_SECRET_FILE: required/),
    ]);
    const config = loadConfig({
      ...production,
      KEYBROKER_ALERT_WEBHOOK_URL: "https://alerts.example.com/hook",
      KEYBROKER_ALERT_WEBHOOK_SECRET_FILE: "/run/secrets/alert-hmac",
    });
    expect(config.alerts.webhook).toEqual({
      url: "https://alerts.example.com/hook",
      secretFile: "/run/secrets/alert-hmac",
      caFile: undefined,
    });
  });

  it("H123 allows plain http only on loopback and only with KEYBROKER_ALLOW_HTTP_ALERT_WEBHOOK=1", () => {
    const hook = { KEYBROKER_ALERT_WEBHOOK_SECRET_FILE: "/run/secrets/alert-hmac" };
    expect(
      loadConfig({
        ...production,
        ...hook,
        KEYBROKER_ALLOW_HTTP_ALERT_WEBHOOK: "1",
        KEYBROKER_ALERT_WEBHOOK_URL: "http://127.0.0.1:9000/hook",
      }).relaxations,
    ).toEqual(["http_alert_webhook"]);
    expect(
      problemsOf({
        ...production,
        ...hook,
        KEYBROKER_ALLOW_HTTP_ALERT_WEBHOOK: "1",
        KEYBROKER_ALERT_WEBHOOK_URL: "http://alerts.example.com/hook",
      }),
    ).toEqual([expect.stringMatching(/^KEYBROKER_ALERT_WEBHOOK_URL: must be https/)]);
  });
});
