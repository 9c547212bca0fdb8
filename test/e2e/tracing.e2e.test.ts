import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { asServiceError, serverStream, unary, type WireMessage } from "../support/grpc-client.js";

const USER = "auth0|tracing-canary-user";
const CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN = "00f067aa0ba902b7";
const TRACEPARENT = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`;

// The only keys a broker span may carry (src/observability/tracing.ts SpanAttributes).
const ALLOWED_ATTRIBUTES = new Set([
  "rpc.system",
  "rpc.service",
  "rpc.method",
  "db.system.name",
  "db.query.summary",
  "keybroker.keyring.operation",
  "keybroker.audit.action",
  "keybroker.provider",
  "http.request.method",
  "http.response.status_code",
  "error.type",
]);

/** Everything an exporter would send about a span, as text to scan. */
function exported(span: ReadableSpan): string {
  return JSON.stringify({
    name: span.name,
    kind: span.kind,
    traceId: span.spanContext().traceId,
    traceState: span.spanContext().traceState?.serialize(),
    parent: span.parentSpanContext?.spanId,
    attributes: span.attributes,
    status: span.status,
    events: span.events,
    links: span.links,
    resource: span.resource.attributes,
  });
}

describe("tracing of a running broker (OTEL_TRACES_EXPORTER=otlp, real SDK, in-memory exporter)", () => {
  const exporter = new InMemorySpanExporter();
  let broker: BrokerHarness;
  let key: string;
  let token: string;
  let secretId: string;

  const spansOf = (traceId: string) =>
    exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
  const serverSpans = () => exporter.getFinishedSpans().filter((s) => s.name.startsWith("keybroker.v1."));

  beforeAll(async () => {
    broker = await startBroker(
      "pglite",
      // The endpoint is validated though the exporter is replaced: nothing listens there.
      { OTEL_TRACES_EXPORTER: "otlp", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:9" },
      { spanExporter: exporter },
    );
    key = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    token = await broker.tokenFor(USER);
    const put = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "traced", fields: { token: broker.upstreamCredentials.bearer } },
      { callerKey: key, bearerToken: token, metadata: [["traceparent", TRACEPARENT]] },
    );
    secretId = (put.response.secret as WireMessage).id as string;
  });

  afterAll(async () => {
    await broker.close();
  });

  it("K245 continues the main app's trace: the server span is the child of the caller's span, and token, caller key, audit, database, keyring and upstream spans descend from it", async () => {
    exporter.reset();
    // A user new to the broker: their data key is generated (a keyring call) inside the trace.
    const newcomer = await broker.tokenFor("auth0|tracing-newcomer");
    const metadata = [["traceparent", TRACEPARENT]] as const;
    const put = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "new", fields: { token: broker.upstreamCredentials.bearer } },
      { callerKey: key, bearerToken: newcomer, metadata },
    );
    const newSecret = (put.response.secret as WireMessage).id as string;
    await unary(
      broker.clients.proxy,
      "Call",
      { secretId: newSecret, method: "GET", path: "/ok" },
      { callerKey: key, bearerToken: newcomer, metadata },
    );
    await broker.app.flushAudit();
    await expect
      .poll(() => spansOf(CALLER_TRACE).some((s) => s.name === "keybroker.audit.record"))
      .toBe(true);

    const spans = spansOf(CALLER_TRACE);
    const server = spans.find((s) => s.name === "keybroker.v1.ProxyService/Call");
    const putServer = spans.find((s) => s.name === "keybroker.v1.SecretService/PutSecret");
    expect(putServer?.parentSpanContext?.spanId).toBe(CALLER_SPAN);
    expect(server?.parentSpanContext?.spanId).toBe(CALLER_SPAN);
    expect(server?.parentSpanContext?.isRemote).toBe(true);
    expect(server?.attributes).toEqual({
      "rpc.system": "grpc",
      "rpc.service": "keybroker.v1.ProxyService",
      "rpc.method": "Call",
    });
    const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
    const descendsFrom =
      (root: ReadableSpan | undefined) =>
      (span: ReadableSpan): boolean => {
        for (
          let p = span.parentSpanContext?.spanId;
          p !== undefined;
          p = byId.get(p)?.parentSpanContext?.spanId
        ) {
          if (p === root?.spanContext().spanId) return true;
        }
        return false;
      };
    const underCall = new Set(spans.filter(descendsFrom(server)).map((s) => s.name));
    for (const name of [
      "keybroker.caller_key.check",
      "keybroker.token.verify",
      "keybroker.audit.record",
      "keybroker.db.query",
      "keybroker.upstream.call",
    ]) {
      expect(underCall, name).toContain(name);
    }
    const underPut = new Set(spans.filter(descendsFrom(putServer)).map((s) => s.name));
    expect(underPut).toContain("keybroker.keyring.generate_data_key");
    expect(underPut).toContain("keybroker.db.query");
    const upstream = spans.find((s) => s.name === "keybroker.upstream.call");
    expect(upstream?.attributes).toEqual({
      "keybroker.provider": "test-upstream",
      "http.request.method": "GET",
      "http.response.status_code": 200,
    });
  });

  it("K245 continues the trace on the Connect port too (traceparent as an HTTP header)", async () => {
    exporter.reset();
    const trace = "0af7651916cd43dd8448eb211c80319c";
    const response = await fetch(`${broker.connectUrl}/keybroker.v1.SecretService/ListSecrets`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-keybroker-key": key,
        authorization: `Bearer ${token}`,
        traceparent: `00-${trace}-b7ad6b7169203331-01`,
      },
      body: "{}",
    });
    expect(response.status).toBe(200);
    await expect
      .poll(() => spansOf(trace).find((s) => s.name === "keybroker.v1.SecretService/ListSecrets"))
      .toBeDefined();
    const server = spansOf(trace).find((s) => s.name === "keybroker.v1.SecretService/ListSecrets");
    expect(server?.parentSpanContext?.spanId).toBe("b7ad6b7169203331");
  });

  it("K246 a malformed or hostile traceparent starts a new trace, and none of its text reaches a span", async () => {
    const hostile = [
      `01-${CALLER_TRACE}-${CALLER_SPAN}-01`, // another version
      `00-${CALLER_TRACE.toUpperCase()}-${CALLER_SPAN}-01`, // upper case
      `00-${CALLER_TRACE}-${CALLER_SPAN}-01-extra`, // extra field on version 00
      `00-${"0".repeat(32)}-${CALLER_SPAN}-01`, // all-zero trace id
      `00-${CALLER_TRACE}-${"0".repeat(16)}-01`, // all-zero parent id
      `00-canary${"a".repeat(24)}-${CALLER_SPAN}-01`, // not hex
      "x".repeat(4096), // oversized
    ];
    for (const traceparent of hostile) {
      exporter.reset();
      await unary(
        broker.clients.secrets,
        "ListSecrets",
        {},
        { callerKey: key, bearerToken: token, metadata: [["traceparent", traceparent]] },
      );
      await expect.poll(() => serverSpans().length).toBeGreaterThan(0);
      const [server] = serverSpans();
      expect(server?.parentSpanContext, traceparent).toBeUndefined();
      expect(server?.spanContext().traceId).not.toBe(CALLER_TRACE);
      const text = exporter.getFinishedSpans().map(exported).join("\n");
      expect(text).not.toContain("canary");
      expect(text).not.toContain("extra");
      expect(text).not.toContain("xxxx");
    }
    // Two values for the header: neither is trusted.
    exporter.reset();
    await unary(
      broker.clients.secrets,
      "ListSecrets",
      {},
      {
        callerKey: key,
        bearerToken: token,
        metadata: [
          ["traceparent", TRACEPARENT],
          ["traceparent", TRACEPARENT],
        ],
      },
    );
    await expect.poll(() => serverSpans().length).toBeGreaterThan(0);
    expect(serverSpans()[0]?.parentSpanContext).toBeUndefined();
  });

  it("K247 no exported span holds the secret, the token, the caller key, the user id or the secret id; attribute keys come from the closed list", async () => {
    exporter.reset();
    const metadata = [["traceparent", TRACEPARENT]] as const;
    await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "second", fields: { token: broker.upstreamCredentials.bearer } },
      { callerKey: key, bearerToken: token, metadata },
    );
    await unary(
      broker.clients.proxy,
      "Call",
      { secretId, method: "GET", path: "/ok" },
      { callerKey: key, bearerToken: token, metadata },
    );
    await serverStream(
      broker.clients.proxy,
      "CallStream",
      { secretId, method: "GET", path: "/ok" },
      { callerKey: key, bearerToken: token, metadata },
    );
    await unary(
      broker.clients.secrets,
      "ListSecretUses",
      { secretId },
      { callerKey: key, bearerToken: token, metadata },
    );
    await broker.app.flushAudit();
    await expect
      .poll(() => spansOf(CALLER_TRACE).filter((s) => s.name === "keybroker.upstream.call").length)
      .toBeGreaterThanOrEqual(2);

    const spans = exporter.getFinishedSpans();
    const text = spans.map(exported).join("\n");
    const needles = [
      broker.upstreamCredentials.bearer,
      token,
      key,
      USER,
      secretId,
      "/ok", // the upstream path
    ];
    expect(findLeaks(text, needles)).toEqual([]);
    for (const span of spans) {
      for (const attribute of Object.keys(span.attributes)) {
        expect(ALLOWED_ATTRIBUTES, `${span.name}: ${attribute}`).toContain(attribute);
      }
      expect(span.events, span.name).toEqual([]);
    }
    expect(new Set(spans.map((s) => s.name))).toContain("keybroker.v1.ProxyService/CallStream");
  });

  it("K248 a failed call's span records the broker error code, never the error's message", async () => {
    exporter.reset();
    const err = await unary(
      broker.clients.secrets,
      "DeleteSecret",
      { secretId: "sec_canary-not-a-real-id" },
      { callerKey: key, bearerToken: token, metadata: [["traceparent", TRACEPARENT]] },
    ).catch((e: unknown) => asServiceError(e));
    expect(err).toHaveProperty("code");
    await expect.poll(() => serverSpans().length).toBeGreaterThan(0);
    const [server] = serverSpans();
    expect(server?.status).toEqual({ code: 2 }); // ERROR, and no message
    expect(typeof server?.attributes["error.type"]).toBe("string");
    expect(exporter.getFinishedSpans().map(exported).join("\n")).not.toContain("canary");
  });
});
