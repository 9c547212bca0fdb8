import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import type { Tracing } from "../observability/tracing.js";
import { startTracing } from "../observability/tracing-sdk.js";
import type { Lifecycle } from "./lifecycle.js";

export interface TracingDeps {
  readonly config: Pick<Config, "tracing">;
  readonly version: string;
  readonly logger: Logger;
  /** Tests: export to the SDK's in-memory exporter instead of OTLP. */
  readonly exporter?: SpanExporter | undefined;
}

/**
 * Tracing, or undefined when it is off (the default): then the SDK is never loaded and no part
 * is wrapped. Registered first, so it stops last and exports the spans of the shutdown too.
 */
export async function openTracing(lifecycle: Lifecycle, deps: TracingDeps): Promise<Tracing | undefined> {
  const settings = deps.config.tracing;
  if (settings === undefined) return undefined;
  const started = await startTracing(settings, {
    version: deps.version,
    ...(deps.exporter === undefined ? {} : { exporter: deps.exporter }),
  });
  lifecycle.defer("tracing", () => started.shutdown());
  deps.logger.info(
    { endpoint: deps.exporter === undefined ? settings.endpoint : "in-memory", sampler: settings.sampler },
    "tracing on: spans are exported over OTLP/HTTP",
  );
  return started.tracing;
}
