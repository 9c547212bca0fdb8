import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { AuditBatchPath } from "../audit/audit-log.js";
import type { BrokerErrorCode, RefusalReason } from "../errors.js";
import type { DataKeyCacheStats } from "../keys/data-key-cache.js";
import type { UpstreamCallEvent } from "../outbound/outbound-client.js";
import type { CallEndEvent, GrpcMethodType } from "./call-end.js";

/**
 * The broker's Prometheus metrics (SPEC I7: never a secret, token or raw user id).
 *
 *   grpc_server_handled_total{grpc_type,grpc_service,grpc_method,grpc_code}
 *                                                              finished RPCs, go-grpc-prometheus's names
 *                                                              and code spellings (OK, NotFound, Internal...)
 *   grpc_server_handling_seconds{grpc_type,grpc_service,grpc_method}   histogram, 0.1 ms – 10 s
 *   keybroker_rpc_requests_total{service,method,code}          the same count under its older name
 *   keybroker_rpc_duration_seconds{service,method}             the same histogram under its older name
 *                                                              (both views computed at scrape time)
 *   keybroker_build_info{version,node_version,commit}          always 1: which build is running
 *   keybroker_kms_requests_total{op,outcome}                   keyring calls (SDK retries are inside one)
 *   keybroker_kms_duration_seconds{op}                         histogram
 *   keybroker_data_key_cache_hits_total                        read from the cache's own counters
 *   keybroker_data_key_cache_misses_total
 *   keybroker_data_key_cache_entries                           unwrapped keys held in memory now
 *   keybroker_data_key_cache_hit_ratio                         lifetime hits / lookups (rate() the counters for a window)
 *   keybroker_upstream_requests_total{provider,status_class,code}   outbound proxy calls
 *   keybroker_upstream_duration_seconds{provider}              histogram
 *   keybroker_response_redactions_total{provider}              declared credential fields redacted from answers
 *   keybroker_key_inspections_total{provider,verdict}          key inspections (PutSecret, InspectSecret)
 *   keybroker_audit_write_failures_total                       audit batches that could not be committed
 *   keybroker_audit_batch_seconds{path}                        committed audit batches by how they reached the
 *                                                              chain head: optimistic (one statement), head_moved
 *                                                              (another writer moved it: the optimistic try, then
 *                                                              the locked path), locked (first batch: head unknown)
 *   keybroker_audit_rows_total                                 audit rows committed
 *   keybroker_auth_refusals_total{reason}                      refused credentials by refusal reason
 *   keybroker_misuse_signals_total{signal}                     misuse signals raised (src/signals/)
 *   keybroker_alert_webhook_deliveries_total{outcome}          alert webhooks delivered, failed, dropped
 *
 * Every label value comes from a closed set: route names, provider ids from the registry file,
 * gRPC code names, status classes ("2xx"), broker error codes. Anything a caller or user chose
 * (secret ids, user refs, paths, caller key ids, tokens) is never a label: one series per user
 * would leak who uses the broker and grow without bound.
 */

/** Keyring verbs, as the `op` label spells them. */
export type KmsOp = "generate_data_key" | "decrypt" | "re_encrypt";
/** `ok`, or the BrokerError code the keyring call failed with. */
export type KmsOutcome = "ok" | BrokerErrorCode;

/** Typed recorders over one private Registry; each is cheap and never throws. */
export interface Metrics {
  /** This app's registry (never prom-client's global one), for the ops server to expose. */
  readonly registry: Registry;
  rpcCompleted(event: CallEndEvent): void;
  kmsCall(op: KmsOp, outcome: KmsOutcome, durationMs: number): void;
  upstreamCall(event: UpstreamCallEvent): void;
  auditWriteFailed(): void;
  /** One committed audit batch: how it reached the head (the chain's contention), its rows, its time. */
  auditBatch(path: AuditBatchPath, rows: number, durationMs: number): void;
  /** One finished key inspection; verdict is none, ok, warned or refused. */
  keyInspected(provider: string, verdict: string): void;
  /** One refused call, by its refusal reason (or the error code when it carries none). */
  authRefused(reason: RefusalReason | BrokerErrorCode): void;
  /** One misuse signal raised (a closed set of names, src/signals/signal-event.ts). */
  misuseSignal(signal: string): void;
  alertWebhookDelivery(outcome: "delivered" | "failed" | "dropped"): void;
}

export interface MetricsDeps {
  /** The data-key cache's counters, read at scrape time; the cache metrics are absent without it. */
  readonly dataKeyCacheStats?: () => DataKeyCacheStats;
  /** Also export process_* and nodejs_* metrics (CPU, heap, event-loop lag). Off in tests: the
   * event-loop monitor they start cannot be stopped. */
  readonly processMetrics?: boolean;
  /** Labels of keybroker_build_info; without it the metric reads "unknown". */
  readonly buildInfo?: { readonly version: string; readonly nodeVersion: string; readonly commit: string };
}

// 0.1 ms (a cache hit) to 10 s (a slow upstream at its timeout), roughly ×2.5 per step.
const DURATION_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

// Indexed by gRPC status number (status.OK = 0 … UNAUTHENTICATED = 16).
const GRPC_CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

// The same codes as go-grpc-prometheus spells `grpc_code` (Go's codes.Code.String()), so
// dashboards and alerts written for it work unchanged.
const GO_GRPC_CODE_NAMES = [
  "OK",
  "Canceled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
] as const;

const UPSTREAM_CODES: ReadonlySet<string> = new Set<BrokerErrorCode | "abandoned">([
  "invalid_argument",
  "unauthenticated",
  "permission_denied",
  "not_found",
  "already_exists",
  "failed_precondition",
  "resource_exhausted",
  "unavailable",
  "deadline_exceeded",
  "data_loss",
  "internal",
  "abandoned",
]);

// Route and provider names are already a closed set; the cap is a backstop so a bug upstream
// can never turn a label into an unbounded one (memory and scrape size grow per series).
const MAX_LABEL_SETS = 256;
const OVERFLOW = "_other";

interface RpcSeries {
  readonly handlingSeconds: Histogram.Internal<GrpcLabel>;
  readonly handledByCode: Array<Counter.Internal | undefined>;
  readonly type: GrpcMethodType;
  readonly service: string;
  readonly method: string;
}

type GrpcLabel = "grpc_type" | "grpc_service" | "grpc_method";

interface UpstreamSeries {
  readonly provider: string;
  readonly duration: Histogram.Internal<"provider">;
  readonly byOutcome: Map<string, Counter.Internal>;
}

const seconds = (ms: number): number => (Number.isFinite(ms) && ms > 0 ? ms / 1000 : 0);

function statusClass(status: number | undefined): string {
  if (status === undefined) return "none"; // no response: refused, timed out, blocked by the guard
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : "other";
}

export function createMetrics(deps: MetricsDeps = {}): Metrics {
  const registry = new Registry();
  const registers = [registry];
  if (deps.processMetrics === true) collectDefaultMetrics({ register: registry });

  const info = deps.buildInfo ?? {
    version: "unknown",
    nodeVersion: process.versions.node,
    commit: "unknown",
  };
  new Gauge({
    name: "keybroker_build_info",
    help: "Always 1; the labels say which build runs (package version, Node version, git commit).",
    labelNames: ["version", "node_version", "commit"] as const,
    registers,
  }).set({ version: info.version, node_version: info.nodeVersion, commit: info.commit }, 1);

  // The standard names first (dashboards and alerts use them); the keybroker_rpc_* pair below
  // counts the same calls under the names earlier releases exported.
  const grpcHandled = new Counter({
    name: "grpc_server_handled_total",
    help: "Total number of RPCs completed on the server, regardless of success or failure.",
    labelNames: ["grpc_type", "grpc_service", "grpc_method", "grpc_code"] as const,
    registers,
  });
  const grpcHandling = new Histogram({
    name: "grpc_server_handling_seconds",
    help: "Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.",
    labelNames: ["grpc_type", "grpc_service", "grpc_method"] as const,
    buckets: DURATION_BUCKETS,
    registers,
  });

  registerOlderRpcNames(registry, grpcHandled, grpcHandling);
  const kmsTotal = new Counter({
    name: "keybroker_kms_requests_total",
    help: "Keyring calls by operation and outcome (ok or the broker error code).",
    labelNames: ["op", "outcome"] as const,
    registers,
  });
  const kmsDuration = new Histogram({
    name: "keybroker_kms_duration_seconds",
    help: "Keyring call duration, the SDK's own retries included.",
    labelNames: ["op"] as const,
    buckets: DURATION_BUCKETS,
    registers,
  });
  const upstreamTotal = new Counter({
    name: "keybroker_upstream_requests_total",
    help: "Outbound provider calls by provider, HTTP status class and broker error code (ok on success).",
    labelNames: ["provider", "status_class", "code"] as const,
    registers,
  });
  const upstreamDuration = new Histogram({
    name: "keybroker_upstream_duration_seconds",
    help: "Outbound provider call duration, body included.",
    labelNames: ["provider"] as const,
    buckets: DURATION_BUCKETS,
    registers,
  });
  const redactionsTotal = new Counter({
    name: "keybroker_response_redactions_total",
    help: "Credential fields a provider declares (redactResponseFields) replaced in answers, by provider.",
    labelNames: ["provider"] as const,
    registers,
  });
  const inspectionsTotal = new Counter({
    name: "keybroker_key_inspections_total",
    help: "Key inspections at PutSecret and InspectSecret, by provider and verdict.",
    labelNames: ["provider", "verdict"] as const,
    registers,
  });
  const auditBatches = new Histogram({
    name: "keybroker_audit_batch_seconds",
    help: "Committed audit batches by how they reached the chain head (optimistic, head_moved, locked).",
    labelNames: ["path"] as const,
    buckets: DURATION_BUCKETS,
    registers,
  });
  const auditRows = new Counter({
    name: "keybroker_audit_rows_total",
    help: "Audit rows committed.",
    registers,
  });
  const auditFailures = new Counter({
    name: "keybroker_audit_write_failures_total",
    help: "Audit batches that could not be committed (their operations failed).",
    registers,
  });

  const authRefusals = new Counter({
    name: "keybroker_auth_refusals_total",
    help: "Refused credentials by refusal reason (caller_key_missing, token_expired, ...).",
    labelNames: ["reason"] as const,
    registers,
  });

  const misuseSignals = new Counter({
    name: "keybroker_misuse_signals_total",
    help: "Misuse signals raised (user_rate, secret_spread, dangerous_first_use, probing, token_age).",
    labelNames: ["signal"] as const,
    registers,
  });
  const alertWebhookDeliveries = new Counter({
    name: "keybroker_alert_webhook_deliveries_total",
    help: "Alert webhook deliveries by outcome (delivered, failed after retries, dropped on a full queue).",
    labelNames: ["outcome"] as const,
    registers,
  });

  const { dataKeyCacheStats } = deps;
  if (dataKeyCacheStats !== undefined) registerDataKeyCache(registers, dataKeyCacheStats);

  // Hot path: label children are bound once per route / provider / outcome and reused, so a
  // recorded event is a map lookup and two increments, not a label hash per metric.
  const rpcSeries = new Map<string, RpcSeries>();
  const newRpcSeries = (type: GrpcMethodType, service: string, method: string): RpcSeries => ({
    type,
    service,
    method,
    handlingSeconds: grpcHandling.labels(type, service, method),
    handledByCode: [],
  });
  let rpcOverflow: RpcSeries | undefined;
  const rpcSeriesFor = (type: GrpcMethodType, service: string, method: string): RpcSeries => {
    const key = `${service}/${method}`;
    const known = rpcSeries.get(key);
    if (known !== undefined) return known;
    if (rpcSeries.size >= MAX_LABEL_SETS) {
      rpcOverflow ??= newRpcSeries(type, OVERFLOW, OVERFLOW);
      return rpcOverflow;
    }
    const created = newRpcSeries(type === "server_stream" ? type : "unary", service, method);
    rpcSeries.set(key, created);
    return created;
  };

  const upstreamSeries = new Map<string, UpstreamSeries>();
  const newUpstreamSeries = (provider: string): UpstreamSeries => ({
    provider,
    duration: upstreamDuration.labels(provider),
    byOutcome: new Map(),
  });
  let upstreamOverflow: UpstreamSeries | undefined;
  const upstreamSeriesFor = (provider: string): UpstreamSeries => {
    const known = upstreamSeries.get(provider);
    if (known !== undefined) return known;
    if (upstreamSeries.size >= MAX_LABEL_SETS) {
      upstreamOverflow ??= newUpstreamSeries(OVERFLOW);
      return upstreamOverflow;
    }
    const created = newUpstreamSeries(provider);
    upstreamSeries.set(provider, created);
    return created;
  };

  // op and outcome are both closed unions: at most 3 × 12 children.
  const kmsCounters = new Map<string, Counter.Internal>();
  const kmsDurationByOp = {
    generate_data_key: kmsDuration.labels("generate_data_key"),
    decrypt: kmsDuration.labels("decrypt"),
    re_encrypt: kmsDuration.labels("re_encrypt"),
  } satisfies Record<KmsOp, unknown>;

  const authRefusalCounters = new Map<string, Counter.Internal>();

  return {
    registry,

    rpcCompleted(event) {
      const series = rpcSeriesFor(event.type, event.service, event.method);
      const index = Number.isInteger(event.code) && event.code >= 0 && event.code <= 16 ? event.code : 2;
      let handled = series.handledByCode[index];
      if (handled === undefined) {
        const code = GO_GRPC_CODE_NAMES[index] ?? "Unknown";
        handled = grpcHandled.labels(series.type, series.service, series.method, code);
        series.handledByCode[index] = handled;
      }
      handled.inc();
      series.handlingSeconds.observe(seconds(event.durationMs));
    },

    kmsCall(op, outcome, durationMs) {
      const key = `${op}|${outcome}`;
      let counter = kmsCounters.get(key);
      if (counter === undefined) {
        counter = kmsTotal.labels(op, outcome);
        kmsCounters.set(key, counter);
      }
      counter.inc();
      kmsDurationByOp[op].observe(seconds(durationMs));
    },

    upstreamCall(event) {
      const series = upstreamSeriesFor(event.provider);
      const cls = statusClass(event.status);
      const code = event.code === undefined ? "ok" : UPSTREAM_CODES.has(event.code) ? event.code : "other";
      const key = `${cls}|${code}`;
      let counter = series.byOutcome.get(key);
      if (counter === undefined) {
        counter = upstreamTotal.labels(series.provider, cls, code);
        series.byOutcome.set(key, counter);
      }
      counter.inc();
      series.duration.observe(seconds(event.durationMs));
      if (event.redactions !== undefined && event.redactions > 0) {
        redactionsTotal.labels(series.provider).inc(event.redactions);
      }
    },

    keyInspected(provider, verdict) {
      // Provider ids come from the registry and verdicts from a closed set (see the list above).
      inspectionsTotal.labels(upstreamSeriesFor(provider).provider, verdict).inc();
    },

    auditBatch(path, rows, durationMs) {
      auditBatches.observe({ path }, durationMs / 1000);
      auditRows.inc(rows);
    },
    auditWriteFailed() {
      auditFailures.inc();
    },

    authRefused(reason) {
      // Both unions are closed, so this label has at most a few dozen values.
      let counter = authRefusalCounters.get(reason);
      if (counter === undefined) {
        counter = authRefusals.labels(reason);
        authRefusalCounters.set(reason, counter);
      }
      counter.inc();
    },

    misuseSignal(signal) {
      // Signal names are a closed list of five; the cap is the same backstop as for routes.
      misuseSignals.labels(/^[a-z_]{1,32}$/.test(signal) ? signal : OVERFLOW).inc();
    },

    alertWebhookDelivery(outcome) {
      alertWebhookDeliveries.labels(outcome).inc();
    },
  };
}

type LabelValues = Record<string, string | number>;

/**
 * keybroker_rpc_requests_total and keybroker_rpc_duration_seconds, the names earlier releases
 * exported, as views of the grpc_server_* metrics computed at scrape time: the same series with
 * `service`, `method` and an upper-case `code`, at no cost per call (recording both cost about
 * 1 µs more per call, bench/tools/call-end-cost.ts).
 */
function registerOlderRpcNames(registry: Registry, handled: Counter, handling: Histogram): void {
  const upper = new Map<string, string>(
    GO_GRPC_CODE_NAMES.map((name, i) => [name, GRPC_CODE_NAMES[i] ?? "UNKNOWN"]),
  );
  // Same label order as before (le first on buckets), grpc_type dropped.
  const relabel = (labels: LabelValues): LabelValues => {
    const out: LabelValues = {};
    for (const [key, value] of Object.entries(labels)) {
      if (key === "grpc_service") out.service = value;
      else if (key === "grpc_method") out.method = value;
      else if (key === "grpc_code") out.code = upper.get(String(value)) ?? "UNKNOWN";
      else if (key !== "grpc_type") out[key] = value;
    }
    return out;
  };
  const view = (name: string, help: string, source: Counter | Histogram, sourceName: string) => ({
    name,
    help,
    type: source === handled ? "counter" : "histogram",
    aggregator: "sum",
    reset() {},
    async get() {
      const metric = await source.get();
      return {
        name,
        help,
        type: metric.type,
        aggregator: metric.aggregator,
        values: metric.values.map((v) => ({
          ...v,
          labels: relabel(v.labels as LabelValues),
          ...("metricName" in v && typeof v.metricName === "string"
            ? { metricName: v.metricName.replace(sourceName, name) }
            : {}),
        })),
      };
    },
  });
  // prom-client reads any object with name, type and get() as a metric (registry.js).
  const register = (metric: ReturnType<typeof view>) =>
    registry.registerMetric(metric as unknown as Parameters<Registry["registerMetric"]>[0]);
  register(
    view(
      "keybroker_rpc_requests_total",
      "Finished RPCs by service, method and gRPC status code (grpc_server_handled_total under its older name).",
      handled,
      "grpc_server_handled_total",
    ),
  );
  register(
    view(
      "keybroker_rpc_duration_seconds",
      "RPC duration from admission to the status being sent (grpc_server_handling_seconds under its older name).",
      handling,
      "grpc_server_handling_seconds",
    ),
  );
}

// Read at scrape time: the cache keeps its own counters, so the hot path pays nothing here.
function registerDataKeyCache(registers: Registry[], stats: () => DataKeyCacheStats): void {
  new Counter({
    name: "keybroker_data_key_cache_hits_total",
    help: "Data-key lookups served from memory.",
    registers,
    collect() {
      this.reset();
      this.inc(stats().hits);
    },
  });
  new Counter({
    name: "keybroker_data_key_cache_misses_total",
    help: "Data-key lookups that needed (or joined) a KMS unwrap.",
    registers,
    collect() {
      this.reset();
      this.inc(stats().misses);
    },
  });
  new Gauge({
    name: "keybroker_data_key_cache_entries",
    help: "Unwrapped data keys currently held in memory.",
    registers,
    collect() {
      this.set(stats().size);
    },
  });
  new Gauge({
    name: "keybroker_data_key_cache_hit_ratio",
    help: "Hits over lookups since start; use rate() of the counters for a recent window.",
    registers,
    collect() {
      const { hits, misses } = stats();
      this.set(hits + misses === 0 ? 0 : hits / (hits + misses));
    },
  });
}
