import { BrokerError } from "../errors.js";
import { appSecretProof, buildSigningMessage, decodeSigningKey, signMessage } from "./hmac-signing.js";
import type { AuthScheme, HmacRecipe } from "./provider-schema.js";

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

/** Header, query and form-field names the broker owns for a scheme; callers may not set them. */
export interface ReservedNames {
  /** Lower-case header names. */
  readonly headers: ReadonlySet<string>;
  /** Lower-case query parameter names. */
  readonly params: ReadonlySet<string>;
  /** Lower-case form body field names. */
  readonly bodyFields: ReadonlySet<string>;
}

/** Every secret field a scheme reads, so the registry can insist they are required. */
export function credentialFields(scheme: AuthScheme): string[] {
  switch (scheme.type) {
    case "bearer":
    case "header":
    case "query":
      return [scheme.field];
    case "basic":
      return [scheme.usernameField, scheme.passwordField];
    case "facebook":
      return [scheme.accessTokenField, scheme.appSecretField];
    case "hmac":
      return [
        scheme.recipe.keyField,
        scheme.recipe.secretField,
        ...(scheme.recipe.fieldHeaders ?? []).map((h) => h.field),
      ];
  }
}

export function reservedNames(scheme: AuthScheme): ReservedNames {
  const headers = new Set<string>();
  const params = new Set<string>();
  const bodyFields = new Set<string>();
  const place = (p: { in: "query" | "header" | "body"; name: string } | undefined): void => {
    if (p === undefined) return;
    (p.in === "query" ? params : p.in === "header" ? headers : bodyFields).add(p.name.toLowerCase());
  };
  switch (scheme.type) {
    case "bearer":
    case "basic":
      headers.add("authorization");
      break;
    case "header":
      headers.add(scheme.name.toLowerCase());
      break;
    case "query":
      params.add(scheme.param.toLowerCase());
      break;
    case "facebook":
      params.add("access_token");
      params.add("appsecret_proof");
      params.add("appsecret_time");
      break;
    case "hmac": {
      const r = scheme.recipe;
      headers.add(r.apiKeyHeader.toLowerCase());
      place(r.signature);
      place(r.timestamp);
      place(r.nonce);
      for (const h of r.fieldHeaders ?? []) headers.add(h.name.toLowerCase());
      break;
    }
  }
  return { headers, params, bodyFields };
}

/**
 * Adds the credential to a request whose caller parts were already checked. The credential
 * headers go LAST, after every caller header, and query credentials after every caller
 * parameter (a signature after everything it signs).
 */
export function injectCredential(input: CredentialInput): PreparedRequest {
  const { scheme } = input;
  const body = Buffer.from(input.body);
  switch (scheme.type) {
    case "bearer":
      return plain(input, body, [["authorization", `Bearer ${headerValue(input, scheme.field)}`]], []);
    case "header":
      return plain(input, body, [[scheme.name, headerValue(input, scheme.field)]], []);
    case "query":
      return plain(input, body, [], [[scheme.param, utf8Value(input, scheme.field)]]);
    case "basic": {
      const user = utf8Value(input, scheme.usernameField);
      if (user.includes(":")) {
        throw new BrokerError(
          "failed_precondition",
          `secret field "${scheme.usernameField}" cannot contain ':'`,
        );
      }
      const encoded = Buffer.from(`${user}:${utf8Value(input, scheme.passwordField)}`, "utf8").toString(
        "base64",
      );
      const sent = plain(input, body, [["authorization", `Basic ${encoded}`]], []);
      return { ...sent, derivedSecrets: [Buffer.from(encoded, "latin1")] };
    }
    case "facebook": {
      const token = fieldBytes(input, scheme.accessTokenField);
      const proof = appSecretProof(fieldBytes(input, scheme.appSecretField), token);
      const sent = plain(
        input,
        body,
        [],
        [
          ["access_token", utf8Value(input, scheme.accessTokenField)],
          ["appsecret_proof", proof],
        ],
      );
      // The proof is long-lived (it changes only with the token), so treat it as a secret too.
      return { ...sent, derivedSecrets: [Buffer.from(proof, "latin1")] };
    }
    case "hmac":
      return signed(input, scheme.recipe, body);
  }
}

function plain(
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

function signed(input: CredentialInput, recipe: HmacRecipe, callerBody: Buffer): PreparedRequest {
  const timestamp =
    recipe.timestamp === undefined
      ? undefined
      : String(recipe.timestamp.unit === "s" ? Math.floor(input.now() / 1000) : Math.floor(input.now()));
  const nonce = recipe.nonce === undefined ? undefined : input.nonce();

  const params: Array<readonly [string, string]> = [...input.query];
  const formPrefix: Array<readonly [string, string]> = [];
  const placedHeaders: Array<readonly [string, string]> = [];
  const place = (
    where: { in: "query" | "header" | "body"; name: string } | undefined,
    value?: string,
  ): void => {
    if (where === undefined || value === undefined) return;
    if (where.in === "query") params.push([where.name, value]);
    else if (where.in === "header") placedHeaders.push([where.name, value]);
    else formPrefix.push([where.name, value]);
  };
  place(recipe.nonce, nonce);
  place(recipe.timestamp, timestamp);

  // Values placed in the body lead the form, as in Kraken's documented example
  // ("nonce=...&ordertype=..."); the caller's form follows byte for byte.
  let body = callerBody;
  const headers: Array<readonly [string, string]> = [...input.headers];
  if (formPrefix.length > 0) {
    const contentType = headers.find(([name]) => name.toLowerCase() === "content-type")?.[1];
    if (
      contentType !== undefined &&
      !contentType.toLowerCase().startsWith("application/x-www-form-urlencoded")
    ) {
      throw new BrokerError(
        "invalid_argument",
        "this provider signs form bodies; content-type must be a form",
      );
    }
    if (contentType === undefined) headers.push(["content-type", "application/x-www-form-urlencoded"]);
    const prefix = encodeQuery(formPrefix);
    body = Buffer.from(
      callerBody.length === 0 ? prefix : `${prefix}&${callerBody.toString("latin1")}`,
      "latin1",
    );
  }

  const queryString = encodeQuery(params);
  const message = buildSigningMessage(recipe.message, {
    method: input.method,
    path: input.pathname,
    queryString,
    body,
    timestamp,
    nonce,
  });
  const key = decodeSigningKey(
    fieldBytes(input, recipe.secretField),
    recipe.secretEncoding,
    recipe.secretField,
  );
  const signature = signMessage(recipe, key, message);
  key.fill(0);

  const finalQuery =
    recipe.signature.in === "query"
      ? [queryString, `${encodeComponent(recipe.signature.name)}=${encodeComponent(signature)}`]
          .filter((s) => s !== "")
          .join("&")
      : queryString;
  headers.push(...placedHeaders);
  for (const h of recipe.fieldHeaders ?? []) headers.push([h.name, headerValue(input, h.field)]);
  headers.push([recipe.apiKeyHeader, headerValue(input, recipe.keyField)]);
  if (recipe.signature.in === "header") headers.push([recipe.signature.name, signature]);
  return { pathAndQuery: withQuery(input.pathname, finalQuery), headers, body, derivedSecrets: [] };
}

function withQuery(pathname: string, query: string): string {
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

function fieldBytes(input: CredentialInput, field: string): Uint8Array {
  const value = input.fields.get(field);
  if (value === undefined || value.length === 0) {
    throw new BrokerError("failed_precondition", `secret is missing field "${field}"`);
  }
  return value;
}

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

function utf8Value(input: CredentialInput, field: string): string {
  try {
    return strictUtf8.decode(fieldBytes(input, field));
  } catch (err) {
    if (err instanceof BrokerError) throw err;
    throw new BrokerError("failed_precondition", `secret field "${field}" is not valid UTF-8`);
  }
}

function headerValue(input: CredentialInput, field: string): string {
  const bytes = fieldBytes(input, field);
  // Visible ASCII and inner spaces only: a stored CR/LF would otherwise split the request
  // (header injection from the secret itself), and edge whitespace is silently trimmed by peers.
  const ok =
    bytes.every((b) => b >= 0x20 && b <= 0x7e) && bytes[0] !== 0x20 && bytes[bytes.length - 1] !== 0x20;
  if (!ok) throw new BrokerError("failed_precondition", `secret field "${field}" cannot be sent in a header`);
  return Buffer.from(bytes).toString("latin1");
}
