import { describe, expect, it } from "vitest";
import { createMetrics } from "../../../src/observability/metrics.js";
import { MISUSE_SIGNALS } from "../../../src/signals/signal-event.js";
import { asArray, asObject, asString, parseYamlDocuments, readRepoFile } from "./deploy-files.js";
import { metricNamesIn } from "./promql.js";

function rules() {
  const [doc] = parseYamlDocuments(readRepoFile("deploy/prometheus-alerts.yml"));
  return asArray(asObject(doc, "rules file").groups, "groups").flatMap((group) =>
    asArray(asObject(group, "group").rules, "rules").map((rule) => asObject(rule, "rule")),
  );
}

async function exportedMetricNames(): Promise<Set<string>> {
  const text = await createMetrics().registry.metrics();
  return new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] ?? ""));
}

describe("deploy/prometheus-alerts.yml", () => {
  it("H124 every rule's expression is over metrics the broker exports", async () => {
    const exported = await exportedMetricNames();
    const all = rules();
    expect(all.length).toBeGreaterThan(0);
    for (const rule of all) {
      const expr = asString(rule.expr, "expr");
      const used = metricNamesIn(expr, exported);
      expect(used.length, `${String(rule.alert)} uses a metric`).toBeGreaterThan(0);
      for (const name of used) expect(exported, `${String(rule.alert)}: ${name}`).toContain(name);
    }
  });

  it("H124 has one alert per misuse signal, each with a severity and a summary", () => {
    const all = rules();
    const signals = all.flatMap((rule) =>
      [...asString(rule.expr, "expr").matchAll(/signal="([a-z_]+)"/g)].map((m) => m[1]),
    );
    expect([...signals].sort()).toEqual([...MISUSE_SIGNALS].sort());
    for (const rule of all) {
      expect(asString(asObject(rule.labels, "labels").severity, "severity")).toMatch(/^(critical|warning)$/);
      expect(asString(asObject(rule.annotations, "annotations").summary, "summary")).not.toBe("");
    }
  });
});
