import { BrokerError } from "../errors.js";
import {
  type CredentialInput,
  encodeComponent,
  encodeQuery,
  fieldBytes,
  headerValue,
  type PreparedRequest,
  withQuery,
} from "./credential-request.js";
import { buildSigningMessage, decodeSigningKey, signMessage } from "./hmac-signing.js";
import type { HmacRecipe, ProviderDefinition, SignedPart } from "./provider-schema.js";

// The HMAC scheme: a declarative recipe (provider-schema.ts) checked, and turned into a signed request.

/** What the registry must refuse about a recipe: values signed but placed nowhere, or a body on GET. */
export function hmacRecipeProblems(recipe: HmacRecipe, provider: ProviderDefinition): string[] {
  const problems: string[] = [];
  const uses = partsUsed(recipe.message);
  if (uses.has("timestamp") && recipe.timestamp === undefined) {
    problems.push("auth.recipe signs a timestamp but does not say where it goes");
  }
  if (uses.has("nonce") && recipe.nonce === undefined) {
    problems.push("auth.recipe signs a nonce but does not say where it goes");
  }
  const placedInBody = recipe.timestamp?.in === "body" || recipe.nonce?.in === "body";
  if (placedInBody && provider.allowedMethods.some((m) => m === "GET" || m === "HEAD")) {
    problems.push("auth.recipe puts values in the body, so GET/HEAD cannot be allowed");
  }
  return problems;
}

function partsUsed(parts: readonly SignedPart[], into = new Set<string>()): Set<string> {
  for (const part of parts) {
    into.add(part.type);
    if (part.type === "digest") partsUsed(part.parts, into);
  }
  return into;
}

/**
 * Places the timestamp and nonce, signs the request as the recipe says, and adds the key id,
 * field headers and signature after every caller part they cover.
 */
export function signHmacRequest(
  input: CredentialInput,
  recipe: HmacRecipe,
  callerBody: Buffer,
): PreparedRequest {
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
  const formBody = formPrefix.length > 0 || (recipe.bodyFormat === "form" && callerBody.length > 0);
  if (formBody) {
    const contentType = headers.find(([name]) => name.toLowerCase() === "content-type")?.[1];
    // Refused rather than overridden: relabelling the caller's bytes would make the upstream
    // parse them as something the caller never wrote (a JSON body read as form parameters).
    if (
      contentType !== undefined &&
      !contentType.toLowerCase().startsWith("application/x-www-form-urlencoded")
    ) {
      throw new BrokerError(
        "invalid_argument",
        "this provider signs form bodies; content-type must be a form",
      );
    }
    // F5: without it the upstream reads no parameters, and the signature covers none.
    if (contentType === undefined) headers.push(["content-type", "application/x-www-form-urlencoded"]);
  }
  if (formPrefix.length > 0) {
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
