/** Prefixes of every metric the broker exports: its own, the standard gRPC server ones, Node's. */
const EXPORTED_PREFIXES = /\b((?:keybroker|grpc_server|process|nodejs)_[a-z0-9_]+)\b/g;
// A histogram is queried through its series; the exporter declares the base name.
const HISTOGRAM_SERIES = /_(bucket|sum|count)$/;

/** The metric names a PromQL expression reads (histogram series mapped to their family). */
export function metricNamesIn(expr: string, exported: ReadonlySet<string>): string[] {
  return [...expr.matchAll(EXPORTED_PREFIXES)].map((m) => {
    const name = m[1] ?? "";
    const family = name.replace(HISTOGRAM_SERIES, "");
    return exported.has(name) ? name : family;
  });
}
