import { BrokerError } from "../errors.js";

// The caller supplies only a path; the host always comes from the provider definition. These
// rules make sure the path cannot climb out of the base path, smuggle a host or authority, or
// mean something different to the upstream than to us (catalogue C24, C25).

const MAX_PATH_LENGTH = 2048;

// RFC 3986 pchar minus "@" (userinfo confusion), plus "/". Everything else — "?", "#", "\",
// spaces, control characters, non-ASCII — must be refused, not guessed at.
const PATH_CHARS = /^[A-Za-z0-9\-._~!$&'()*+,;=:%/]*$/;

// Escapes that change the path's structure once some hop decodes them: dot, slash, backslash,
// percent (double encoding), and control bytes.
const FORBIDDEN_ESCAPE = /%(2e|2f|5c|25|[01][0-9a-f]|7f)/i;
const MALFORMED_ESCAPE = /%(?![0-9a-f]{2})/i;

/**
 * Checks a caller-supplied path and returns it unchanged, or throws invalid_argument. Nothing is
 * normalised: a path that would need normalising is refused, so what we check is what we send.
 */
export function checkCallerPath(path: string): string {
  const refuse = (why: string): never => {
    throw new BrokerError("invalid_argument", `path ${why}`);
  };
  if (path.length === 0 || path.length > MAX_PATH_LENGTH) refuse("is empty or too long");
  if (!path.startsWith("/")) refuse("must start with '/' and cannot be a URL");
  if (!PATH_CHARS.test(path))
    refuse("contains a character that is not allowed ('?', '#', '@', '\\', space...)");
  if (MALFORMED_ESCAPE.test(path)) refuse("contains a malformed percent escape");
  if (FORBIDDEN_ESCAPE.test(path))
    refuse("contains an encoded dot, slash, backslash, percent or control byte");
  // An escape that is well-formed hex but not UTF-8 (`%ae`, `%A0`) decodes differently on every
  // server (Latin-1, replacement character, error): refused, so it means one thing (catalogue W2).
  if (path.includes("%") && !decodesAsUtf8(path)) refuse("contains a percent escape that is not valid UTF-8");
  if (path.includes("//")) refuse("contains an empty segment ('//')");
  for (const segment of path.split("/").slice(1)) {
    // "..;" and "..." are traversal on some servers (Tomcat, IIS): any dots-only segment goes.
    const bare = segment.split(";")[0] ?? "";
    if (bare.length > 0 && /^\.+$/.test(bare)) refuse("contains a '.' or '..' segment");
  }
  return path;
}

function decodesAsUtf8(path: string): boolean {
  try {
    decodeURIComponent(path);
    return true;
  } catch {
    return false;
  }
}

/** A compiled path pattern from a provider definition. */
export interface PathPattern {
  readonly source: string;
  matches(path: string): boolean;
}

const LITERAL_SEGMENT = /^[A-Za-z0-9\-._~!$&'()+,;=:]+$/;

/**
 * Pattern syntax, relative to the provider's base path: segments separated by "/"; `*` matches
 * exactly one non-empty segment; `**` (only as the last segment) matches zero or more
 * segments; any other segment matches itself exactly (case-sensitive, no partial wildcards).
 * Examples: `/v1/charges/*`, `/api/v3/**`, `/user`.
 */
export function pathPatternProblem(pattern: string): string | undefined {
  if (!pattern.startsWith("/")) return "must start with '/'";
  const segments = pattern.split("/").slice(1);
  for (const [i, segment] of segments.entries()) {
    if (segment === "**") {
      if (i !== segments.length - 1) return "'**' is only allowed as the last segment";
    } else if (segment === "*") {
      // fine
    } else if (segment === "" && i === segments.length - 1) {
      // a trailing slash (or the root pattern "/") is literal
    } else if (!LITERAL_SEGMENT.test(segment) || /^\.+$/.test(segment)) {
      return `segment "${segment}" is not a literal, '*' or '**'`;
    }
  }
  return undefined;
}

export function compilePathPattern(pattern: string): PathPattern {
  const problem = pathPatternProblem(pattern);
  if (problem !== undefined) throw new Error(`invalid path pattern ${pattern}: ${problem}`);
  const want = pattern.split("/").slice(1);
  return {
    source: pattern,
    matches(path: string): boolean {
      const got = path.split("/").slice(1);
      for (const [i, p] of want.entries()) {
        if (p === "**") return true;
        const segment = got[i];
        if (segment === undefined) return false;
        if (p === "*" ? segment === "" : segment !== p) return false;
      }
      return got.length === want.length;
    },
  };
}

/**
 * Joins the provider's base URL and a checked caller path, parses the result once with the
 * WHATWG parser and insists the origin and path came out exactly as intended.
 */
export function resolveUpstreamUrl(baseUrl: URL, callerPath: string): URL {
  const basePath = baseUrl.pathname.endsWith("/") ? baseUrl.pathname.slice(0, -1) : baseUrl.pathname;
  const expectedPath = `${basePath}${callerPath}`;
  const url = new URL(`${baseUrl.origin}${expectedPath}`);
  if (
    url.origin !== baseUrl.origin ||
    url.pathname !== expectedPath ||
    url.search !== "" ||
    url.hash !== "" ||
    url.username !== "" ||
    url.password !== ""
  ) {
    throw new BrokerError("invalid_argument", "path does not stay on the provider's base URL");
  }
  return url;
}
