import { context } from "@opentelemetry/api";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Redacted } from "../log/redacted.js";
import { createTracing, type Tracing } from "./tracing.js";

/** The standard OTEL_TRACES_SAMPLER names this broker accepts. */
export type SamplerName =
  | "always_on"
  | "always_off"
  | "traceidratio"
  | "parentbased_always_on"
  | "parentbased_always_off"
  | "parentbased_traceidratio";

/** Tracing settings, validated from the standard OTEL_* variables at start-up (config.ts). */
export interface TracingSettings {
  /** Full OTLP/HTTP (JSON) traces URL, e.g. http://otel-collector:4318/v1/traces. */
  readonly endpoint: string;
  /** OTEL_EXPORTER_OTLP_(TRACES_)HEADERS: often a collector's API key, so never printed. */
  readonly headers: Redacted<Readonly<Record<string, string>>>;
  readonly serviceName: string;
  readonly sampler: SamplerName;
  /** For the ratio samplers, 0 to 1. */
  readonly samplerRatio: number;
}

export interface StartedTracing {
  readonly tracing: Tracing;
  /** Exports what is buffered, then stops. */
  shutdown(): Promise<void>;
}

export interface StartTracingOptions {
  readonly version: string;
  /** Replaces the OTLP exporter (tests pass the SDK's InMemorySpanExporter); spans then export one by one. */
  readonly exporter?: SpanExporter;
}

let contextManagerInstalled = false;

/**
 * Loads the OpenTelemetry SDK, only now: with tracing off (the default) none of it is imported
 * and no wrapper is installed. The tracer provider is not registered globally: the broker hands
 * its tracer to its own wrappers, so two brokers in one process (tests) keep separate exports.
 * The async-hooks context manager is process-wide by nature, and installed once.
 */
export async function startTracing(
  settings: TracingSettings,
  options: StartTracingOptions,
): Promise<StartedTracing> {
  const [sdk, hooks, resources] = await Promise.all([
    import("@opentelemetry/sdk-trace-base"),
    import("@opentelemetry/context-async-hooks"),
    import("@opentelemetry/resources"),
  ]);
  if (!contextManagerInstalled) {
    context.setGlobalContextManager(new hooks.AsyncLocalStorageContextManager().enable());
    contextManagerInstalled = true;
  }
  let processor: InstanceType<typeof sdk.BatchSpanProcessor> | InstanceType<typeof sdk.SimpleSpanProcessor>;
  if (options.exporter === undefined) {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
    const exporter = new OTLPTraceExporter({
      url: settings.endpoint,
      headers: { ...settings.headers.unwrap() },
    });
    processor = new sdk.BatchSpanProcessor(exporter);
  } else {
    processor = new sdk.SimpleSpanProcessor(options.exporter);
  }
  const provider = new sdk.BasicTracerProvider({
    resource: resources.resourceFromAttributes({
      "service.name": settings.serviceName,
      "service.version": options.version,
    }),
    sampler: samplerOf(sdk, settings),
    spanProcessors: [processor],
  });
  return {
    tracing: createTracing(provider.getTracer("keybroker", options.version)),
    shutdown: () => provider.shutdown(),
  };
}

type Sdk = typeof import("@opentelemetry/sdk-trace-base");

function samplerOf(sdk: Sdk, settings: TracingSettings) {
  const ratio = new sdk.TraceIdRatioBasedSampler(settings.samplerRatio);
  switch (settings.sampler) {
    case "always_on":
      return new sdk.AlwaysOnSampler();
    case "always_off":
      return new sdk.AlwaysOffSampler();
    case "traceidratio":
      return ratio;
    case "parentbased_always_on":
      return new sdk.ParentBasedSampler({ root: new sdk.AlwaysOnSampler() });
    case "parentbased_always_off":
      return new sdk.ParentBasedSampler({ root: new sdk.AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new sdk.ParentBasedSampler({ root: ratio });
  }
}
