import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { createDataKeyCache } from "../../../src/keys/data-key-cache.js";
import { createMetrics } from "../../../src/observability/metrics.js";

// Canaries: values that reach the code paths around metrics but must never become labels (I7).
const USER_REF = "uref-canary-7f3a9c1e";
const SECRET_ID = "sec-canary-0b5d2e44";
const TOKEN = "eyJhbGciOiJSUzI1NiJ9.canary-token.sig";
const PATH = "/api/v3/account?signature=canary";

/** The value of one sample line in the exposition text, or undefined when absent. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

function seriesOf(text: string, name: string): string[] {
  return text.split("\n").filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

describe("metrics", () => {
  it("counts finished RPCs by service, method and gRPC code name, with a duration histogram", async () => {
    const metrics = createMetrics();
    const service = "keybroker.v1.SecretService";
    metrics.rpcCompleted({ type: "unary", service, method: "PutSecret", code: status.OK, durationMs: 2 });
    metrics.rpcCompleted({ type: "unary", service, method: "PutSecret", code: status.OK, durationMs: 40 });
    metrics.rpcCompleted({
      type: "unary",
      service,
      method: "PutSecret",
      code: status.NOT_FOUND,
      durationMs: 1,
    });
    metrics.rpcCompleted({
      type: "unary",
      service,
      method: "ListSecrets",
      code: status.UNAUTHENTICATED,
      durationMs: 0.05,
    });

    const text = await metrics.registry.metrics();
    const put = `service="${service}",method="PutSecret"`;
    expect(sample(text, `keybroker_rpc_requests_total{${put},code="OK"}`)).toBe(2);
    expect(sample(text, `keybroker_rpc_requests_total{${put},code="NOT_FOUND"}`)).toBe(1);
    expect(
      sample(
        text,
        `keybroker_rpc_requests_total{service="${service}",method="ListSecrets",code="UNAUTHENTICATED"}`,
      ),
    ).toBe(1);
    expect(sample(text, `keybroker_rpc_duration_seconds_count{${put}}`)).toBe(3);
    expect(sample(text, `keybroker_rpc_duration_seconds_sum{${put}}`)).toBeCloseTo(0.043, 6);
    // 0.05 ms lands in the smallest bucket; 40 ms only from 50 ms up.
    expect(
      sample(
        text,
        `keybroker_rpc_duration_seconds_bucket{le="0.0001",service="${service}",method="ListSecrets"}`,
      ),
    ).toBe(1);
    expect(sample(text, `keybroker_rpc_duration_seconds_bucket{le="0.025",${put}}`)).toBe(2);
    expect(sample(text, `keybroker_rpc_duration_seconds_bucket{le="0.05",${put}}`)).toBe(3);
  });

  it("records a status number outside the gRPC range as UNKNOWN and a non-finite duration as zero", async () => {
    const metrics = createMetrics();
    metrics.rpcCompleted({ type: "unary", service: "s", method: "m", code: 99, durationMs: Number.NaN });
    metrics.rpcCompleted({ type: "unary", service: "s", method: "m", code: -1, durationMs: -5 });

    const text = await metrics.registry.metrics();
    expect(sample(text, `keybroker_rpc_requests_total{service="s",method="m",code="UNKNOWN"}`)).toBe(2);
    expect(sample(text, `keybroker_rpc_duration_seconds_sum{service="s",method="m"}`)).toBe(0);
  });

  it("counts upstream calls by provider, status class and error code", async () => {
    const metrics = createMetrics();
    metrics.upstreamCall({ provider: "binance", status: 200, code: undefined, durationMs: 30 });
    metrics.upstreamCall({ provider: "binance", status: 204, code: undefined, durationMs: 30 });
    metrics.upstreamCall({ provider: "binance", status: 429, code: undefined, durationMs: 5 });
    metrics.upstreamCall({
      provider: "binance",
      status: undefined,
      code: "deadline_exceeded",
      durationMs: 2000,
    });
    metrics.upstreamCall({ provider: "kraken", status: 200, code: "abandoned", durationMs: 1 });

    const text = await metrics.registry.metrics();
    const total = (labels: string) => sample(text, `keybroker_upstream_requests_total{${labels}}`);
    expect(total(`provider="binance",status_class="2xx",code="ok"`)).toBe(2);
    expect(total(`provider="binance",status_class="4xx",code="ok"`)).toBe(1);
    expect(total(`provider="binance",status_class="none",code="deadline_exceeded"`)).toBe(1);
    expect(total(`provider="kraken",status_class="2xx",code="abandoned"`)).toBe(1);
    expect(sample(text, `keybroker_upstream_duration_seconds_count{provider="binance"}`)).toBe(4);
  });

  it("collapses an upstream error code it does not know into other", async () => {
    const metrics = createMetrics();
    metrics.upstreamCall({ provider: "p", status: 999, code: `boom ${TOKEN}`, durationMs: 1 });

    const text = await metrics.registry.metrics();
    expect(
      sample(text, `keybroker_upstream_requests_total{provider="p",status_class="other",code="other"}`),
    ).toBe(1);
    expect(text).not.toContain(TOKEN);
  });

  it("counts KMS calls by op and outcome and audit write failures", async () => {
    const metrics = createMetrics();
    metrics.kmsCall("decrypt", "ok", 3);
    metrics.kmsCall("decrypt", "ok", 4);
    metrics.kmsCall("decrypt", "unavailable", 5000);
    metrics.kmsCall("re_encrypt", "data_loss", 2);
    metrics.auditWriteFailed();
    metrics.auditWriteFailed();

    const text = await metrics.registry.metrics();
    expect(sample(text, `keybroker_kms_requests_total{op="decrypt",outcome="ok"}`)).toBe(2);
    expect(sample(text, `keybroker_kms_requests_total{op="decrypt",outcome="unavailable"}`)).toBe(1);
    expect(sample(text, `keybroker_kms_requests_total{op="re_encrypt",outcome="data_loss"}`)).toBe(1);
    expect(sample(text, `keybroker_kms_duration_seconds_count{op="decrypt"}`)).toBe(3);
    expect(sample(text, "keybroker_audit_write_failures_total")).toBe(2);
  });

  it("reads the data-key cache's hits, misses, size and hit ratio at scrape time", async () => {
    const cache = createDataKeyCache({ maxAgeMs: 60_000, maxUses: 100, maxEntries: 10 });
    const metrics = createMetrics({ dataKeyCacheStats: () => cache.stats() });
    const load = async () => Buffer.alloc(32, 7);
    (await cache.getOrLoad(`user-${USER_REF}`, load)).fill(0);
    for (let i = 0; i < 3; i++) (await cache.getOrLoad(`user-${USER_REF}`, load)).fill(0);
    (await cache.getOrLoad("user-other", load)).fill(0);

    const first = await metrics.registry.metrics();
    expect(sample(first, "keybroker_data_key_cache_hits_total")).toBe(3);
    expect(sample(first, "keybroker_data_key_cache_misses_total")).toBe(2);
    expect(sample(first, "keybroker_data_key_cache_entries")).toBe(2);
    expect(sample(first, "keybroker_data_key_cache_hit_ratio")).toBeCloseTo(0.6, 6);
    expect(first).not.toContain(USER_REF);

    cache.clear();
    (await cache.getOrLoad("user-other", load)).fill(0);
    const second = await metrics.registry.metrics();
    // Counters stay monotonic across scrapes (no double counting); the gauge follows the cache.
    expect(sample(second, "keybroker_data_key_cache_misses_total")).toBe(3);
    expect(sample(second, "keybroker_data_key_cache_entries")).toBe(1);
  });

  it("leaves the data-key cache metrics out when no stats function is given", async () => {
    const text = await createMetrics().registry.metrics();
    expect(text).not.toContain("keybroker_data_key_cache");
    expect(text).toContain("# TYPE keybroker_rpc_requests_total counter");
  });

  it("keeps each broker's registry separate, so two in one process do not share counts", async () => {
    const a = createMetrics();
    const b = createMetrics();
    a.auditWriteFailed();

    expect(sample(await a.registry.metrics(), "keybroker_audit_write_failures_total")).toBe(1);
    expect(sample(await b.registry.metrics(), "keybroker_audit_write_failures_total")).toBe(0);
  });

  it("caps distinct route and provider label sets, folding the excess into _other", async () => {
    const metrics = createMetrics();
    for (let i = 0; i < 300; i++) {
      metrics.rpcCompleted({ type: "unary", service: "s", method: `m${i}`, code: status.OK, durationMs: 1 });
      metrics.upstreamCall({ provider: `p${i}`, status: 200, code: undefined, durationMs: 1 });
    }

    const text = await metrics.registry.metrics();
    expect(seriesOf(text, "keybroker_rpc_requests_total")).toHaveLength(257);
    expect(sample(text, `keybroker_rpc_requests_total{service="_other",method="_other",code="OK"}`)).toBe(44);
    expect(seriesOf(text, "keybroker_upstream_requests_total")).toHaveLength(257);
    expect(text).not.toContain(`method="m299"`);
  });

  it("never exposes a canary user ref, secret id, token or path passed alongside recorded events", async () => {
    const cache = createDataKeyCache({ maxAgeMs: 60_000, maxUses: 100, maxEntries: 10 });
    const metrics = createMetrics({ dataKeyCacheStats: () => cache.stats() });
    (await cache.getOrLoad(`${USER_REF}:${SECRET_ID}`, async () => Buffer.alloc(32, 1))).fill(0);
    // Extra properties the way a careless caller might spread a whole request into the event.
    const leaky = { userRef: USER_REF, secretId: SECRET_ID, token: TOKEN, path: PATH };
    metrics.rpcCompleted({
      service: "keybroker.v1.ProxyService",
      method: "Call",
      type: "unary",
      code: 0,
      durationMs: 3,
      ...leaky,
    });
    metrics.upstreamCall({ provider: "binance", status: 200, code: undefined, durationMs: 3, ...leaky });
    metrics.kmsCall("generate_data_key", "ok", 9);

    const text = await metrics.registry.metrics();
    expect(
      sample(
        text,
        `keybroker_rpc_requests_total{service="keybroker.v1.ProxyService",method="Call",code="OK"}`,
      ),
    ).toBe(1);
    for (const canary of [USER_REF, SECRET_ID, TOKEN, "canary", "signature"]) {
      expect(text).not.toContain(canary);
    }
    const labelNames = new Set([...text.matchAll(/[{,]([a-z_]+)="/g)].map((m) => m[1]));
    expect([...labelNames].sort()).toEqual(
      [
        "code",
        "le",
        "method",
        "op",
        "outcome",
        "provider",
        "service",
        "status_class",
        // The standard gRPC server metrics' labels (route names and code names only).
        "grpc_code",
        "grpc_method",
        "grpc_service",
        "grpc_type",
        // keybroker_build_info's.
        "commit",
        "node_version",
        "version",
      ].sort(),
    );
  });

  it("K252 also counts finished RPCs under go-grpc-prometheus's names and code spellings, with grpc_type unary or server_stream", async () => {
    const metrics = createMetrics();
    const proxy = "keybroker.v1.ProxyService";
    metrics.rpcCompleted({ type: "unary", service: proxy, method: "Call", code: status.OK, durationMs: 2 });
    metrics.rpcCompleted({
      type: "server_stream",
      service: proxy,
      method: "CallStream",
      code: status.UNAVAILABLE,
      durationMs: 30,
    });
    const text = await metrics.registry.metrics();
    const call = `grpc_type="unary",grpc_service="${proxy}",grpc_method="Call"`;
    const stream = `grpc_type="server_stream",grpc_service="${proxy}",grpc_method="CallStream"`;
    expect(sample(text, `grpc_server_handled_total{${call},grpc_code="OK"}`)).toBe(1);
    expect(sample(text, `grpc_server_handled_total{${stream},grpc_code="Unavailable"}`)).toBe(1);
    expect(sample(text, `grpc_server_handling_seconds_count{${call}}`)).toBe(1);
    expect(sample(text, `grpc_server_handling_seconds_sum{${stream}}`)).toBeCloseTo(0.03, 6);
    // The older names count the same calls.
    expect(sample(text, `keybroker_rpc_requests_total{service="${proxy}",method="Call",code="OK"}`)).toBe(1);
  });

  it("K251 exports keybroker_build_info = 1 labelled with the version, Node version and commit only", async () => {
    const metrics = createMetrics({
      buildInfo: { version: "1.2.3", nodeVersion: "24.1.0", commit: "0123abc" },
    });
    const text = await metrics.registry.metrics();
    expect(seriesOf(text, "keybroker_build_info")).toEqual([
      'keybroker_build_info{version="1.2.3",node_version="24.1.0",commit="0123abc"} 1',
    ]);
    const fallback = await createMetrics().registry.metrics();
    expect(
      sample(
        fallback,
        `keybroker_build_info{version="unknown",node_version="${process.versions.node}",commit="unknown"}`,
      ),
    ).toBe(1);
  });
});
