import { BrokerError } from "../errors.js";

// Policy: a caller header the broker owns is REFUSED (invalid_argument), never silently
// dropped — a caller sending Authorization is either confused or probing, and both deserve a
// clear answer. Same rule for query parameters the auth scheme owns (request-plan.ts).

/** Limits on caller headers; generous for real APIs, small enough to bound memory. */
export const HEADER_LIMITS = Object.freeze({
  maxCount: 64,
  maxNameLength: 128,
  maxValueLength: 8192,
  maxTotalBytes: 32 * 1024,
});

// Credentials, routing and framing belong to the broker (C30): the caller may not pick the host,
// smuggle a second credential, change message framing or the method the allowlist checked.
const BROKER_OWNED = new Set([
  "authorization",
  "proxy-authorization",
  "cookie",
  "cookie2",
  "host",
  "x-api-key",
  // hop-by-hop and framing
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "content-length",
  "expect",
  "http2-settings",
  // the broker forces identity so it can scrub the body it reads
  "accept-encoding",
  // host and method confusion at the upstream or a proxy in front of it
  "forwarded",
  "x-forwarded-host",
  "x-http-method-override",
  "x-http-method",
  "x-method-override",
  // L4: URL, host and client-address overrides that frameworks and proxies honour (IIS/Symfony
  // X-Original-URL and X-Rewrite-URL reroute the request past the path allowlist).
  "x-original-url",
  "x-rewrite-url",
  "x-override-url",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-prefix",
  "x-forwarded-path",
  "x-forwarded-uri",
  "x-forwarded-port",
  "x-forwarded-server",
  "x-forwarded-scheme",
  "x-host",
  "x-http-host-override",
  "x-original-host",
  "x-real-ip",
  "x-client-ip",
  "true-client-ip",
]);

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Visible ASCII, space and tab. CR, LF and NUL are the injection characters; other control
// and non-ASCII bytes are refused too rather than passed to peers that disagree about them.
const FIELD_VALUE = /^[\t\x20-\x7e]*$/;

/**
 * Checks caller headers and returns them as a fresh list. `reserved` holds the lower-case
 * names the provider's auth scheme injects; they are refused like the fixed list.
 */
export function checkCallerHeaders(
  headers: ReadonlyArray<readonly [string, string]>,
  reserved: ReadonlySet<string>,
): Array<[string, string]> {
  if (headers.length > HEADER_LIMITS.maxCount) {
    throw new BrokerError("invalid_argument", `at most ${HEADER_LIMITS.maxCount} headers are allowed`);
  }
  let total = 0;
  const out: Array<[string, string]> = [];
  for (const [name, value] of headers) {
    if (/[\r\n\0]/.test(name) || /[\r\n\0]/.test(value)) {
      throw new BrokerError("invalid_argument", "header names and values cannot contain CR, LF or NUL");
    }
    if (name.length === 0 || name.length > HEADER_LIMITS.maxNameLength || !TOKEN.test(name)) {
      throw new BrokerError("invalid_argument", "header name is not a valid HTTP token");
    }
    if (value.length > HEADER_LIMITS.maxValueLength || !FIELD_VALUE.test(value)) {
      throw new BrokerError(
        "invalid_argument",
        `header "${name}" has a value that is too long or not printable ASCII`,
      );
    }
    // L4: CGI-style servers (and nginx with underscores_in_headers) read "_" as "-", so
    // "X_MBX_APIKEY" would reach the upstream as a second copy of the broker's key header.
    const lower = name.toLowerCase().replaceAll("_", "-");
    if (BROKER_OWNED.has(lower) || lower.startsWith("proxy-") || reserved.has(lower)) {
      throw new BrokerError("invalid_argument", `header "${name}" is set by the broker and cannot be sent`);
    }
    total += name.length + value.length + 4;
    if (total > HEADER_LIMITS.maxTotalBytes) {
      throw new BrokerError("invalid_argument", "caller headers are too large");
    }
    out.push([name, value.trim()]);
  }
  return out;
}

// Hop-by-hop headers describe the upstream connection, not the response; length and encoding
// change because the broker decodes and scrubs the body.
const RESPONSE_DROPPED = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "transfer-encoding",
  "te",
  "trailer",
  "upgrade",
  "content-length",
  "content-encoding",
]);

/** Response headers to hand back: hop-by-hop and framing headers removed, every value scrubbed. */
export function filterResponseHeaders(
  headers: Readonly<Record<string, string | string[] | undefined>>,
  scrub: (value: string) => string,
): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const [name, value] of Object.entries(headers)) {
    const lower = name.toLowerCase();
    if (value === undefined || RESPONSE_DROPPED.has(lower)) continue;
    for (const v of Array.isArray(value) ? value : [value]) out.push([lower, scrub(v)]);
  }
  return out;
}
