import { z } from "zod";
import { Redacted } from "../log/redacted.js";
import type { SamplerName, TracingSettings } from "../observability/tracing-sdk.js";

const SAMPLERS = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio",
] as const satisfies readonly SamplerName[];

/**
 * The standard OpenTelemetry variables the broker reads (the SDK's own names, so an operator's
 * usual settings work). Tracing is off unless OTEL_TRACES_EXPORTER=otlp; the SDK is then loaded
 * and the OTLP/HTTP exporter posts JSON to the collector.
 */
export const tracingEnvShape = {
  OTEL_SDK_DISABLED: z.enum(["true", "false"]).optional(),
  /** `none` (the default here, unlike the SDK's) or `otlp`. */
  OTEL_TRACES_EXPORTER: z.string().optional(),
  OTEL_EXPORTER_OTLP_ENDPOINT: z.string().optional(),
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: z.string().optional(),
  OTEL_EXPORTER_OTLP_PROTOCOL: z.string().optional(),
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: z.string().optional(),
  OTEL_EXPORTER_OTLP_HEADERS: z.string().optional(),
  OTEL_EXPORTER_OTLP_TRACES_HEADERS: z.string().optional(),
  OTEL_SERVICE_NAME: z.string().optional(),
  OTEL_TRACES_SAMPLER: z.string().optional(),
  OTEL_TRACES_SAMPLER_ARG: z.string().optional(),
};

type TracingEnv = { readonly [K in keyof typeof tracingEnvShape]?: z.output<(typeof tracingEnvShape)[K]> };

/** The collector's default OTLP/HTTP address (the specification's). */
const DEFAULT_ENDPOINT = "http://localhost:4318";

/**
 * Validated tracing settings, or undefined when tracing is off. Problems name the variable,
 * never its value: the headers usually hold a collector API key.
 */
export function parseTracing(e: TracingEnv, problems: string[]): TracingSettings | undefined {
  const exporter = (e.OTEL_TRACES_EXPORTER ?? "none").trim();
  if (exporter !== "none" && exporter !== "otlp") {
    problems.push("OTEL_TRACES_EXPORTER: `none` (default) or `otlp`; other exporters are not supported");
    return undefined;
  }
  const protocol = e.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL ?? e.OTEL_EXPORTER_OTLP_PROTOCOL;
  if (protocol !== undefined && protocol !== "http/json") {
    problems.push(
      "OTEL_EXPORTER_OTLP_PROTOCOL: only `http/json` is supported (the collector's OTLP/HTTP port, usually 4318)",
    );
  }
  const endpoint = tracesEndpoint(e, problems);
  const headers = parseHeaders(e, problems);
  const sampler = (e.OTEL_TRACES_SAMPLER ?? "parentbased_always_on").trim();
  if (!(SAMPLERS as readonly string[]).includes(sampler)) {
    problems.push(`OTEL_TRACES_SAMPLER: one of ${SAMPLERS.join(", ")}`);
  }
  const ratio = e.OTEL_TRACES_SAMPLER_ARG === undefined ? 1 : Number(e.OTEL_TRACES_SAMPLER_ARG);
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1) {
    problems.push("OTEL_TRACES_SAMPLER_ARG: a ratio from 0 to 1");
  }
  const serviceName = e.OTEL_SERVICE_NAME ?? "keybroker";
  if (!/^[\w.-]{1,64}$/.test(serviceName)) {
    problems.push("OTEL_SERVICE_NAME: 1 to 64 letters, digits, '.', '-' or '_'");
  }
  if (exporter === "none" || e.OTEL_SDK_DISABLED === "true") return undefined;
  return Object.freeze({
    endpoint,
    headers: new Redacted(Object.freeze(headers)),
    serviceName,
    sampler: sampler as SamplerName,
    samplerRatio: ratio,
  });
}

function tracesEndpoint(e: TracingEnv, problems: string[]): string {
  const specific = e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
  const variable =
    specific === undefined ? "OTEL_EXPORTER_OTLP_ENDPOINT" : "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
  // The signal-specific variable is the full URL; the general one is a base the path is added to.
  const raw =
    specific ?? `${(e.OTEL_EXPORTER_OTLP_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, "")}/v1/traces`;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    problems.push(`${variable}: an http(s) URL`);
    return raw;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") problems.push(`${variable}: an http(s) URL`);
  if (url.username !== "" || url.password !== "") {
    problems.push(`${variable}: no credentials in the URL (send them in OTEL_EXPORTER_OTLP_HEADERS)`);
  }
  return url.toString();
}

// `key1=value1,key2=value2`, values percent-encoded (the OTel specification's format).
function parseHeaders(e: TracingEnv, problems: string[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const variable of ["OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] as const) {
    const raw = e[variable];
    if (raw === undefined || raw.trim() === "") continue;
    for (const pair of raw.split(",")) {
      const eq = pair.indexOf("=");
      const name = pair.slice(0, eq).trim().toLowerCase();
      let value: string | undefined;
      try {
        value = eq < 0 ? undefined : decodeURIComponent(pair.slice(eq + 1).trim());
      } catch {
        value = undefined;
      }
      if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(name) || value === undefined || /[\r\n]/.test(value)) {
        problems.push(`${variable}: comma-separated name=value pairs (values percent-encoded)`);
        break;
      }
      headers[name] = value;
    }
  }
  return headers;
}
