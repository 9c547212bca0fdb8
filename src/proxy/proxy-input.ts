import { invalidArgument } from "../errors.js";
import { parseSecretId } from "../secrets/secret-input.js";

/** Limits on a proxied request, before the provider's own rules (methods, paths) apply. */
export const PROXY_LIMITS = {
  maxPathChars: 2048,
  maxQueryParams: 100,
  maxHeaders: 50,
  maxNameValueChars: 8192,
  maxBodyBytes: 1024 * 1024,
} as const;

const METHOD = /^[A-Z]{3,7}$/;

/** A proxied call as the caller asked for it; the host is never the caller's to choose. */
export interface ProxyCallInput {
  readonly secretId: string;
  readonly method: string;
  readonly path: string;
  readonly query: ReadonlyArray<readonly [string, string]>;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Uint8Array;
}

function pairs(
  list: ReadonlyArray<{ name: string; value: string }>,
  what: string,
  max: number,
): Array<readonly [string, string]> {
  if (list.length > max) throw invalidArgument(`at most ${max} ${what}`);
  return list.map(({ name, value }) => {
    if (name.length === 0 || name.length + value.length > PROXY_LIMITS.maxNameValueChars) {
      throw invalidArgument(
        `${what} names must be non-empty and name+value at most ${PROXY_LIMITS.maxNameValueChars} characters`,
      );
    }
    return [name, value] as const;
  });
}

/** Size and shape checks; path, header and method policy is the egress engine's (src/outbound). */
export function parseProxyCall(request: {
  secretId: string;
  method: string;
  path: string;
  query: ReadonlyArray<{ name: string; value: string }>;
  headers: ReadonlyArray<{ name: string; value: string }>;
  body: Uint8Array;
}): ProxyCallInput {
  if (!METHOD.test(request.method))
    throw invalidArgument("method must be an upper-case HTTP method such as GET");
  if (request.path.length === 0 || request.path.length > PROXY_LIMITS.maxPathChars) {
    throw invalidArgument(`path must be 1-${PROXY_LIMITS.maxPathChars} characters`);
  }
  if (request.body.length > PROXY_LIMITS.maxBodyBytes) throw invalidArgument("body too large");
  return {
    secretId: parseSecretId(request.secretId),
    method: request.method,
    path: request.path,
    query: pairs(request.query, "query parameters", PROXY_LIMITS.maxQueryParams),
    headers: pairs(request.headers, "headers", PROXY_LIMITS.maxHeaders),
    body: request.body,
  };
}
