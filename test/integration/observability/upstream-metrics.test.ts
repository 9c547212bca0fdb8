import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isBrokerError } from "../../../src/errors.js";
import { createMetrics, type Metrics } from "../../../src/observability/metrics.js";
import { createOutboundClient, type OutboundClient } from "../../../src/outbound/outbound-client.js";
import { parseProviderRegistry } from "../../../src/outbound/provider-registry.js";
import { captureLogs } from "../../support/captured-logs.js";
import {
  canaryCredentials,
  type HttpsUpstream,
  startHttpsUpstream,
  UPSTREAM_HOST,
  type UpstreamCredentials,
} from "../../support/https-upstream.js";
import { encodings, fakeResolver, request, upstreamProviders } from "../outbound/upstream-fixture.js";

// The real outbound client against the HTTPS test upstream, reporting through onUpstreamCall
// into real metrics: labels carry the provider and outcome, never a URL, secret or secret id.

let creds: UpstreamCredentials;
let upstream: HttpsUpstream;
let metrics: Metrics;
let client: OutboundClient;
const signal = () => new AbortController().signal;

function clientWith(
  onUpstreamCall: NonNullable<Parameters<typeof createOutboundClient>[0]["onUpstreamCall"]>,
) {
  const registry = parseProviderRegistry(
    { providers: upstreamProviders(upstream.port) },
    { production: false },
  );
  const { resolve } = fakeResolver({ [UPSTREAM_HOST]: ["127.0.0.1"] });
  const logs = captureLogs();
  return {
    client: createOutboundClient({ registry, resolve, ca: upstream.ca, logger: logs.logger, onUpstreamCall }),
    logs,
  };
}

async function outcome(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return "ok";
  } catch (err) {
    return isBrokerError(err) ? err.code : "not a BrokerError";
  }
}

function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

beforeAll(async () => {
  creds = canaryCredentials();
  upstream = await startHttpsUpstream(creds);
  metrics = createMetrics();
  client = clientWith((e) => metrics.upstreamCall(e)).client;

  expect(await outcome(client.call(request(creds, "up-bearer", { path: "/ok" }), signal()))).toBe("ok");
  expect(await outcome(client.call(request(creds, "up-query", { path: "/ok" }), signal()))).toBe("ok");
  expect(await outcome(client.call(request(creds, "up-bearer", { path: "/status-504" }), signal()))).toBe(
    "ok",
  );
  expect(await outcome(client.call(request(creds, "up-bearer", { path: "/reset" }), signal()))).toBe(
    "unavailable",
  );
  expect(await outcome(client.call(request(creds, "up-short", { path: "/slow-drip" }), signal()))).toBe(
    "deadline_exceeded",
  );
  const stream = await client.callStream(request(creds, "up-bearer", { path: "/huge" }), signal());
  for await (const _chunk of stream.body) break; // the caller stops reading after one chunk
});

afterAll(async () => {
  await client.close();
  await upstream.close();
});

describe("upstream call metrics (real outbound client)", () => {
  it("counts each settled call once by provider, status class and outcome", async () => {
    const text = await metrics.registry.metrics();
    const total = (labels: string) => sample(text, `keybroker_upstream_requests_total{${labels}}`);

    expect(total(`provider="up-bearer",status_class="2xx",code="ok"`)).toBe(1);
    expect(total(`provider="up-query",status_class="2xx",code="ok"`)).toBe(1);
    expect(total(`provider="up-bearer",status_class="5xx",code="ok"`)).toBe(1);
    expect(total(`provider="up-bearer",status_class="none",code="unavailable"`)).toBe(1);
    expect(total(`provider="up-short",status_class="2xx",code="deadline_exceeded"`)).toBe(1);
    expect(total(`provider="up-bearer",status_class="2xx",code="abandoned"`)).toBe(1);
    expect(sample(text, `keybroker_upstream_duration_seconds_count{provider="up-bearer"}`)).toBe(4);
    // The slow-drip call ran into its 300 ms deadline: the duration is the real one.
    expect(sample(text, `keybroker_upstream_duration_seconds_sum{provider="up-short"}`)).toBeGreaterThan(
      0.25,
    );
  });

  it("exposes no credential, secret id or request path", async () => {
    const text = await metrics.registry.metrics();
    const canaries = [creds.bearer, creds.queryKey].flatMap(encodings);

    for (const forbidden of [
      ...canaries,
      "secret-up-bearer",
      "secret-up-query",
      "/ok",
      "slow-drip",
      "/huge",
    ]) {
      expect(text).not.toContain(forbidden);
    }
  });

  it("keeps the call's own outcome when the metrics hook throws, and logs the hook failure", async () => {
    const { client: throwing, logs } = clientWith(() => {
      throw new Error("metrics broke");
    });
    try {
      const res = await throwing.call(request(creds, "up-bearer", { path: "/ok" }), signal());

      expect(res.status).toBe(200);
      expect(logs.text()).toContain("onUpstreamCall listener threw");
    } finally {
      await throwing.close();
    }
  });
});
