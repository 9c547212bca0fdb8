/**
 * Provider definitions pointing at the local HTTPS test upstream (test/support/https-upstream.ts).
 * Loopback is allowed only because these run outside production; production config refuses it.
 */
export function loopbackProvider(options: {
  id: string;
  port: number;
  /** Route prefix on the upstream, which picks its credential verifier, e.g. "/bearer". */
  path: string;
  requiredFields: readonly string[];
  auth: unknown;
  timeoutMs?: number;
  /** Operation class rules; by default reads (GET, HEAD) and writes (any other method) anywhere. */
  operations?: unknown;
  defaultGrant?: readonly string[];
}): unknown {
  return {
    id: options.id,
    displayName: `test ${options.id}`,
    baseUrl: `https://127.0.0.1:${options.port}${options.path}`,
    allowedHosts: ["127.0.0.1"],
    allowedMethods: ["GET", "POST"],
    pathPatterns: ["/**"],
    requiredFields: [...options.requiredFields],
    auth: options.auth,
    timeoutMs: options.timeoutMs ?? 3000,
    maxResponseBytes: 1024 * 1024,
    allowLoopback: true,
    operations: options.operations ?? TEST_OPERATIONS,
    defaultGrant: options.defaultGrant ?? ["read", "write"],
  };
}

/** Every path a read for GET and HEAD and a write for any other method (test upstreams only). */
export const TEST_OPERATIONS = [
  { class: "read", methods: ["GET", "HEAD"], paths: ["/**"] },
  { class: "write", methods: ["POST", "PUT", "PATCH", "DELETE"], paths: ["/**"] },
] as const;

/** The upstream's bearer-checking routes ("/ok", "/echo", "/hang", ...) with a `token` field. */
export function bearerUpstreamProvider(id: string, port: number, timeoutMs?: number): unknown {
  return loopbackProvider({
    id,
    port,
    path: "/bearer",
    requiredFields: ["token"],
    auth: { type: "bearer", field: "token" },
    ...(timeoutMs === undefined ? {} : { timeoutMs }),
  });
}
