import { describe, expect, it } from "vitest";
import { createDataKeyCache } from "../../../src/keys/data-key-cache.js";
import { createMetrics } from "../../../src/observability/metrics.js";
import { asArray, asObject, asString, isObject, type Json, readRepoFile } from "./deploy-files.js";
import { metricNamesIn } from "./promql.js";

const DASHBOARD = "deploy/grafana/keybroker-dashboard.json";

/** Every metric family a production broker exports, process metrics included (as in dev). */
async function exportedMetricNames(): Promise<Set<string>> {
  const cache = createDataKeyCache({ maxAgeMs: 1_000, maxUses: 1, maxEntries: 1 });
  const metrics = createMetrics({ processMetrics: true, dataKeyCacheStats: () => cache.stats() });
  const text = await metrics.registry.metrics();
  return new Set([...text.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1] ?? ""));
}

/** Every `expr` and templating `query` string anywhere in the dashboard. */
function queriesIn(value: Json, found: string[] = []): string[] {
  if (Array.isArray(value)) {
    for (const item of value) queriesIn(item, found);
  } else if (isObject(value)) {
    for (const [key, item] of Object.entries(value)) {
      if ((key === "expr" || key === "definition") && typeof item === "string") found.push(item);
      else queriesIn(item, found);
    }
  }
  return found;
}

describe(DASHBOARD, () => {
  const dashboard = asObject(JSON.parse(readRepoFile(DASHBOARD)) as Json, "dashboard");

  it("K253 queries only metrics the broker exports, and every panel has a query", async () => {
    const exported = await exportedMetricNames();
    const queries = queriesIn(dashboard);
    expect(queries.length).toBeGreaterThan(10);
    const used = new Set(queries.flatMap((q) => metricNamesIn(q, exported)));
    for (const name of used) expect(exported, name).toContain(name);
    // The standard gRPC names, the broker's own and Node's process metrics are all on it.
    for (const name of [
      "grpc_server_handled_total",
      "grpc_server_handling_seconds",
      "keybroker_build_info",
    ]) {
      expect(used).toContain(name);
    }
    expect([...used].some((n) => n.startsWith("process_"))).toBe(true);
    for (const panel of asArray(dashboard.panels, "panels").map((p) => asObject(p, "panel"))) {
      if (panel.type === "row") continue;
      expect(asArray(panel.targets, `${String(panel.title)} targets`).length).toBeGreaterThan(0);
    }
  });

  it("is an importable dashboard: a uid, a Prometheus datasource variable, unique panel ids", () => {
    expect(asString(dashboard.uid, "uid")).toMatch(/^[a-z0-9-]{1,40}$/);
    const variables = asArray(asObject(dashboard.templating, "templating").list, "variables");
    expect(variables.map((v) => asObject(v, "variable").type)).toContain("datasource");
    const ids = asArray(dashboard.panels, "panels").map((p) => asObject(p, "panel").id);
    expect(new Set(ids).size).toBe(ids.length);
  });
});
