import { BrokerError } from "../errors.js";
import { credentialFields, injectCredential } from "./auth-schemes.js";
import type { PreparedRequest } from "./credential-request.js";
import { checkCallerHeaders } from "./header-policy.js";
import { checkCallerPath, resolveUpstreamUrl } from "./path-guard.js";
import { DEFAULT_MAX_REQUEST_BYTES, type Provider } from "./provider-registry.js";
import { type AuthScheme, HTTP_METHODS, type HttpMethod } from "./provider-schema.js";

/** A call as the proxy service hands it over: the caller's parts plus the decrypted fields. */
export interface OutboundRequest {
  readonly providerId: string;
  /** Keys the per-secret nonce sequence; never sent or logged. */
  readonly secretId: string;
  readonly fields: ReadonlyMap<string, Buffer>;
  readonly method: string;
  /** Relative to the provider's base URL, e.g. "/api/v3/account"; no query string. */
  readonly path: string;
  readonly query: ReadonlyArray<readonly [string, string]>;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Uint8Array;
  /** Correlates this call's log lines with the RPC's (never sent upstream). */
  readonly requestId?: string;
}

/** A fully built request, ready to send unchanged, with what must be scrubbed from the reply. */
export interface PlannedRequest extends PreparedRequest {
  readonly method: HttpMethod;
  readonly url: URL;
  /** What the reply must be scrubbed of: the credential values the upstream knows, and derived ones. */
  readonly secrets: readonly Uint8Array[];
}

/** A request whose caller parts passed every check: what signing needs, nothing signed yet. */
export interface CheckedRequest {
  readonly provider: Provider;
  readonly request: OutboundRequest;
  readonly method: HttpMethod;
  readonly url: URL;
  readonly headers: ReadonlyArray<readonly [string, string]>;
}

export interface PlanDeps {
  readonly now: () => number;
  readonly nextNonce: (secretId: string) => string;
}

const QUERY_LIMITS = { maxCount: 100, maxNameLength: 256, maxValueLength: 8192 } as const;
const USER_AGENT = "keybroker/0.1";

/**
 * Checks everything the caller chose against the provider definition, in the order a caller
 * can act on: malformed input (invalid_argument), then not allowed (permission_denied), then
 * the stored secret not fitting the provider (failed_precondition). Nothing here does I/O.
 */
export function planRequest(provider: Provider, req: OutboundRequest, deps: PlanDeps): PlannedRequest {
  return signRequest(checkRequest(provider, req), deps);
}

/** The checks of `planRequest`, without signing: a refused request never waits for a nonce turn. */
export function checkRequest(provider: Provider, req: OutboundRequest): CheckedRequest {
  const def = provider.definition;
  const method = req.method;
  if (!isHttpMethod(method))
    throw new BrokerError("invalid_argument", "method must be an upper-case HTTP method");

  const path = checkCallerPath(req.path);
  const url = resolveUpstreamUrl(provider.baseUrl, path);

  const reserved = provider.reserved;
  const headers = checkCallerHeaders(req.headers, reserved.headers);
  checkQuery(req.query, reserved.params);

  const maxBody = def.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES;
  if (req.body.length > maxBody) throw new BrokerError("invalid_argument", "request body is too large");
  if ((method === "GET" || method === "HEAD") && req.body.length > 0) {
    throw new BrokerError("invalid_argument", "GET and HEAD requests cannot carry a body");
  }
  if (reserved.bodyFields.size > 0 && req.body.length > 0) {
    for (const name of new URLSearchParams(Buffer.from(req.body).toString("latin1")).keys()) {
      if (isReservedName(name, reserved.bodyFields)) {
        throw new BrokerError("invalid_argument", `body field "${name}" is set by the broker`);
      }
    }
  }

  if (!def.allowedMethods.includes(method)) {
    throw new BrokerError("permission_denied", "method is not allowed for this provider");
  }
  if (!provider.patterns.some((p) => p.matches(path))) {
    throw new BrokerError("permission_denied", "path is not allowed for this provider");
  }

  const missing = def.requiredFields.filter((f) => (req.fields.get(f)?.length ?? 0) === 0);
  if (missing.length > 0) {
    throw new BrokerError(
      "failed_precondition",
      `secret is missing required field(s): ${missing.join(", ")}`,
    );
  }

  // Broker defaults before the credential; the credential itself is appended last by injectCredential.
  headers.push(["accept-encoding", "identity"]);
  if (!headers.some(([name]) => name.toLowerCase() === "user-agent"))
    headers.push(["user-agent", USER_AGENT]);
  return { provider, request: req, method, url, headers };
}

/** Adds the credential to a checked request; takes a nonce only if the scheme signs one. */
export function signRequest(checked: CheckedRequest, deps: PlanDeps): PlannedRequest {
  const { provider, request: req, method, url, headers } = checked;
  const def = provider.definition;
  const prepared = injectCredential({
    scheme: def.auth,
    fields: req.fields,
    method,
    pathname: url.pathname,
    query: req.query,
    headers,
    body: req.body,
    now: deps.now,
    nonce: () => deps.nextNonce(req.secretId),
  });
  return {
    ...prepared,
    method,
    url,
    secrets: [...upstreamKnown(def.auth, req.fields), ...prepared.derivedSecrets],
  };
}

/**
 * The field values this request's auth scheme puts on the wire or signs with (H1): only those
 * can come back in the answer. An HMAC signing secret is never sent, but the upstream holds it
 * (it verifies the signature with it), so it is scrubbed too. Any other field of the secret is
 * not scrubbed: the upstream never saw it, and each pattern costs every answer scrubbing time.
 */
function upstreamKnown(scheme: AuthScheme, fields: ReadonlyMap<string, Buffer>): Buffer[] {
  const known: Buffer[] = [];
  for (const name of new Set(credentialFields(scheme))) {
    const value = fields.get(name);
    if (value !== undefined) known.push(value);
  }
  return known;
}

/** Whether the provider's scheme signs a nonce, so its requests must be sent in nonce order (F1). */
export function signsNonce(provider: Provider): boolean {
  const auth = provider.definition.auth;
  return auth.type === "hmac" && auth.recipe.nonce !== undefined;
}

function isHttpMethod(method: string): method is HttpMethod {
  return (HTTP_METHODS as readonly string[]).includes(method);
}

function checkQuery(query: ReadonlyArray<readonly [string, string]>, reserved: ReadonlySet<string>): void {
  if (query.length > QUERY_LIMITS.maxCount) {
    throw new BrokerError(
      "invalid_argument",
      `at most ${QUERY_LIMITS.maxCount} query parameters are allowed`,
    );
  }
  for (const [name, value] of query) {
    if (
      name.length === 0 ||
      name.length > QUERY_LIMITS.maxNameLength ||
      value.length > QUERY_LIMITS.maxValueLength
    ) {
      throw new BrokerError(
        "invalid_argument",
        "query parameter name is empty or a name or value is too long",
      );
    }
    try {
      encodeURIComponent(name);
      encodeURIComponent(value);
    } catch (err) {
      throw new BrokerError("invalid_argument", "query parameters must be valid Unicode", { cause: err });
    }
    // A value is encoded before sending, but a server that decodes before splitting at ";"
    // would read "1;nonce=1" as a second parameter.
    const smuggled = value
      .split(";")
      .slice(1)
      .some((part) => part.includes("=") && isReservedName(part, reserved));
    if (smuggled || isReservedName(name, reserved)) {
      throw new BrokerError("invalid_argument", `query parameter "${name}" is set by the broker`);
    }
  }
}

/**
 * Whether a parameter name, as any server might read it, is one the broker owns (L4). Servers
 * disagree on names: some trim, fold case, read `name[]` as `name`, percent-decode twice, or
 * split pairs at ";" as well as "&" (so "x=1;nonce=1" carries a second parameter). A name is
 * reserved if ANY of those readings matches.
 */
export function isReservedName(raw: string, reserved: ReadonlySet<string>): boolean {
  if (reserved.size === 0) return false;
  for (const piece of raw.split(";")) {
    // "a=b" inside one name: the part before "=" is what a ";"-splitting server sees as a name.
    const name = normaliseName(piece.split("=")[0] ?? "");
    if (reserved.has(name)) return true;
  }
  return false;
}

function normaliseName(raw: string): string {
  let name = raw;
  // Two rounds of percent-decoding: a proxy may decode once and the framework again.
  for (let i = 0; i < 2; i++) {
    try {
      name = decodeURIComponent(name.replace(/\+/g, " "));
    } catch {
      break;
    }
  }
  name = name.trim().toLowerCase();
  // "nonce[]", "nonce[0]", "nonce[x]": PHP and Rails read them as the array "nonce".
  name = name.replace(/\[[^\]]*\]$/, "").trim();
  return name;
}
