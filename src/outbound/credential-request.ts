import { BrokerError } from "../errors.js";
import type { AuthScheme } from "./provider-schema.js";

/**
 * The request a credential is added to, and the helpers every auth scheme shares to add it:
 * reading a secret field as a header or UTF-8 value, and the strict query encoding signatures need.
 */

/** What a caller-checked request looks like before the broker adds its credential. */
export interface CredentialInput {
  readonly scheme: AuthScheme;
  readonly fields: ReadonlyMap<string, Uint8Array>;
  readonly method: string;
  /** Full upstream pathname, base path included. */
  readonly pathname: string;
  readonly query: ReadonlyArray<readonly [string, string]>;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Uint8Array;
  /** Wall clock, epoch milliseconds. */
  readonly now: () => number;
  /** Next nonce for the secret in use. */
  readonly nonce: () => string;
}

/** The exact request to send: built once, signed, then sent unchanged. */
export interface PreparedRequest {
  readonly pathAndQuery: string;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
  /** Credentials derived from the fields that went on the wire; the scrubber hides them too. */
  readonly derivedSecrets: readonly Buffer[];
}

/** The caller's request with the credential's headers and query parameters appended, last. */
export function withCredential(
  input: CredentialInput,
  body: Buffer,
  credentialHeaders: ReadonlyArray<readonly [string, string]>,
  credentialParams: ReadonlyArray<readonly [string, string]>,
): PreparedRequest {
  const query = encodeQuery([...input.query, ...credentialParams]);
  return {
    pathAndQuery: withQuery(input.pathname, query),
    headers: [...input.headers, ...credentialHeaders],
    body,
    derivedSecrets: [],
  };
}

export function withQuery(pathname: string, query: string): string {
  return query === "" ? pathname : `${pathname}?${query}`;
}

/** RFC 3986 strict percent-encoding (also !'()*), so every byte we sign is unambiguous. */
export function encodeComponent(value: string): string {
  return encodeURIComponent(value).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
}

export function encodeQuery(pairs: ReadonlyArray<readonly [string, string]>): string {
  return pairs.map(([k, v]) => `${encodeComponent(k)}=${encodeComponent(v)}`).join("&");
}

export function fieldBytes(input: CredentialInput, field: string): Uint8Array {
  const value = input.fields.get(field);
  if (value === undefined || value.length === 0) {
    throw new BrokerError("failed_precondition", `secret is missing field "${field}"`);
  }
  return value;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

export function utf8Value(input: CredentialInput, field: string): string {
  try {
    return strictUtf8.decode(fieldBytes(input, field));
  } catch (err) {
    if (err instanceof BrokerError) throw err;
    throw new BrokerError("failed_precondition", `secret field "${field}" is not valid UTF-8`);
  }
}

export function headerValue(input: CredentialInput, field: string): string {
  const bytes = fieldBytes(input, field);
  // Visible ASCII and inner spaces only: a stored CR/LF would otherwise split the request
  // (header injection from the secret itself), and edge whitespace is silently trimmed by peers.
  const ok =
    bytes.every((b) => b >= 0x20 && b <= 0x7e) && bytes[0] !== 0x20 && bytes[bytes.length - 1] !== 0x20;
  if (!ok) throw new BrokerError("failed_precondition", `secret field "${field}" cannot be sent in a header`);
  return Buffer.from(bytes).toString("latin1");
}
