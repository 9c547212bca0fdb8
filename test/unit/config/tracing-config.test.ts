import { describe, expect, it } from "vitest";
import { loadConfig } from "../../../src/config/config.js";
import { configProblemsOf, PRODUCTION_ENV } from "../../support/config-env.js";

const COLLECTOR_KEY = "collector-api-key-canary";

describe("tracing configuration (standard OTEL_* variables)", () => {
  it("K249 leaves tracing off unless OTEL_TRACES_EXPORTER=otlp, and off again with OTEL_SDK_DISABLED=true", () => {
    expect(loadConfig(PRODUCTION_ENV).tracing).toBeUndefined();
    expect(loadConfig({ ...PRODUCTION_ENV, OTEL_TRACES_EXPORTER: "none" }).tracing).toBeUndefined();
    expect(
      loadConfig({ ...PRODUCTION_ENV, OTEL_TRACES_EXPORTER: "otlp", OTEL_SDK_DISABLED: "true" }).tracing,
    ).toBeUndefined();
  });

  it("exports to the collector's OTLP/HTTP traces path, parentbased_always_on, as service keybroker by default", () => {
    const tracing = loadConfig({ ...PRODUCTION_ENV, OTEL_TRACES_EXPORTER: "otlp" }).tracing;
    expect(tracing).toMatchObject({
      endpoint: "http://localhost:4318/v1/traces",
      serviceName: "keybroker",
      sampler: "parentbased_always_on",
      samplerRatio: 1,
    });
    const custom = loadConfig({
      ...PRODUCTION_ENV,
      OTEL_TRACES_EXPORTER: "otlp",
      OTEL_EXPORTER_OTLP_ENDPOINT: "https://otel.internal:4318/",
      OTEL_EXPORTER_OTLP_HEADERS: `x-api-key=${COLLECTOR_KEY},x-team=a%20b`,
      OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
      OTEL_TRACES_SAMPLER_ARG: "0.25",
    }).tracing;
    expect(custom?.endpoint).toBe("https://otel.internal:4318/v1/traces");
    expect(custom?.headers.unwrap()).toEqual({ "x-api-key": COLLECTOR_KEY, "x-team": "a b" });
    expect(custom?.samplerRatio).toBe(0.25);
    // The signal-specific endpoint is used as is.
    const specific = loadConfig({
      ...PRODUCTION_ENV,
      OTEL_TRACES_EXPORTER: "otlp",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/custom/traces",
    }).tracing;
    expect(specific?.endpoint).toBe("http://collector:4318/custom/traces");
  });

  it("K250 refuses bad tracing settings at start-up, all at once, naming variables and never the collector's key", () => {
    const problems = configProblemsOf({
      ...PRODUCTION_ENV,
      OTEL_TRACES_EXPORTER: "otlp",
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `https://user:${COLLECTOR_KEY}@collector:4318/v1/traces`,
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_EXPORTER_OTLP_HEADERS: `x-api-key=${COLLECTOR_KEY}%ZZ`,
      OTEL_TRACES_SAMPLER: "sometimes",
      OTEL_TRACES_SAMPLER_ARG: "2",
      OTEL_SERVICE_NAME: "key broker\n",
    });
    expect(problems.map((p) => p.split(":")[0]).sort()).toEqual(
      [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_TRACES_SAMPLER",
        "OTEL_TRACES_SAMPLER_ARG",
        "OTEL_SERVICE_NAME",
      ].sort(),
    );
    expect(problems.join("\n")).not.toContain(COLLECTOR_KEY);
    expect(configProblemsOf({ ...PRODUCTION_ENV, OTEL_TRACES_EXPORTER: "zipkin" })).toEqual([
      expect.stringMatching(/^OTEL_TRACES_EXPORTER: /),
    ]);
  });

  it("K251 accepts only a hex git commit for keybroker_build_info", () => {
    expect(loadConfig(PRODUCTION_ENV).gitCommit).toBe("unknown");
    // The image's ENV is empty when the build passed no GIT_COMMIT.
    expect(loadConfig({ ...PRODUCTION_ENV, KEYBROKER_GIT_COMMIT: "" }).gitCommit).toBe("unknown");
    expect(loadConfig({ ...PRODUCTION_ENV, KEYBROKER_GIT_COMMIT: "0123abcd" }).gitCommit).toBe("0123abcd");
    expect(configProblemsOf({ ...PRODUCTION_ENV, KEYBROKER_GIT_COMMIT: 'main",evil="1' })).toEqual([
      expect.stringMatching(/^KEYBROKER_GIT_COMMIT: /),
    ]);
  });
});
