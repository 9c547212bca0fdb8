import { createHash, createHmac } from "node:crypto";
import { BrokerError } from "../errors.js";
import type { HmacRecipe, SignedPart } from "./provider-schema.js";

/** The final request pieces a recipe may sign: exactly the bytes that will be sent. */
export interface SigningInput {
  readonly method: string;
  /** Full upstream pathname, base path included (e.g. "/0/private/AddOrder"). */
  readonly path: string;
  /** Final query string without "?" and without the signature parameter. */
  readonly queryString: string;
  readonly body: Uint8Array;
  readonly timestamp: string | undefined;
  readonly nonce: string | undefined;
}

/** Concatenates the recipe's parts, in order, into the byte string to sign. */
export function buildSigningMessage(parts: readonly SignedPart[], input: SigningInput): Buffer {
  return Buffer.concat(parts.map((part) => partBytes(part, input)));
}

function partBytes(part: SignedPart, input: SigningInput): Buffer {
  switch (part.type) {
    case "timestamp":
      return Buffer.from(required(input.timestamp, "timestamp"), "utf8");
    case "nonce":
      return Buffer.from(required(input.nonce, "nonce"), "utf8");
    case "method":
      return Buffer.from(input.method, "utf8");
    case "path":
      return Buffer.from(input.path, "utf8");
    case "pathAndQuery":
      return Buffer.from(
        input.queryString === "" ? input.path : `${input.path}?${input.queryString}`,
        "utf8",
      );
    case "query":
      return Buffer.from(input.queryString, "utf8");
    case "body":
      return Buffer.from(input.body);
    case "literal":
      return Buffer.from(part.value, "utf8");
    case "digest":
      // Raw digest bytes, not hex: Kraken signs path + SHA256(nonce + postdata) as binary.
      return createHash(part.algorithm).update(buildSigningMessage(part.parts, input)).digest();
  }
}

function required(value: string | undefined, what: string): string {
  // The registry refuses recipes that sign a value they never place, so this is a bug guard.
  if (value === undefined)
    throw new BrokerError("internal", "internal error", { cause: new Error(`no ${what}`) });
  return value;
}

/** The HMAC key from the stored secret, decoding base64 when the recipe says so. */
export function decodeSigningKey(
  secret: Uint8Array,
  encoding: HmacRecipe["secretEncoding"],
  field: string,
): Buffer {
  if (encoding === "raw") return Buffer.from(secret);
  const text = Buffer.from(secret).toString("latin1");
  if (text.length === 0 || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text)) {
    // Buffer.from(x, "base64") silently skips junk; a wrong key would only show up as
    // "invalid signature" at the vendor, so refuse it here with the field name (never the value).
    throw new BrokerError("failed_precondition", `secret field "${field}" is not valid base64`);
  }
  return Buffer.from(text, "base64");
}

/** Signs a message as the recipe says (algorithm and output encoding). */
export function signMessage(
  recipe: Pick<HmacRecipe, "algorithm" | "signatureEncoding">,
  key: Uint8Array,
  message: Uint8Array,
): string {
  return createHmac(recipe.algorithm, key).update(message).digest(recipe.signatureEncoding);
}

/** Facebook's appsecret_proof: hex HMAC-SHA256 of the access token keyed with the app secret. */
export function appSecretProof(appSecret: Uint8Array, accessToken: Uint8Array): string {
  return createHmac("sha256", appSecret).update(accessToken).digest("hex");
}
