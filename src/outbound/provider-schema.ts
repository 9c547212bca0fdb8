import { z } from "zod";
import { OPERATION_CLASSES } from "../policy/operation-class.js";
import { inspectionSchema } from "./inspection-recipe.js";
import { oauthSchema } from "./oauth-schema.js";
import { rateLimitsSchema } from "./rate-limit-schema.js";

// Shapes of a provider definition. Cross-field rules (host in allowedHosts, fields covered,
// production restrictions) live in provider-registry.ts so every problem is reported together.

const fieldName = z
  .string()
  .regex(/^[a-z][a-z0-9_]{0,63}$/, "field names are lower_snake_case, at most 64 characters");

// RFC 9110 token: no separators, no whitespace, no control characters.
const headerName = z
  .string()
  .max(128)
  .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, "must be an HTTP header name (RFC 9110 token)");

const paramName = z
  .string()
  .max(128)
  .regex(/^[A-Za-z0-9_.\-~]+$/, "parameter names are unreserved URL characters only");

/** One piece of the byte string an HMAC recipe signs, in order. */
export type SignedPart =
  | { readonly type: "timestamp" }
  | { readonly type: "nonce" }
  | { readonly type: "method" }
  | { readonly type: "path" }
  | { readonly type: "pathAndQuery" }
  | { readonly type: "query" }
  | { readonly type: "body" }
  | { readonly type: "literal"; readonly value: string }
  | {
      readonly type: "digest";
      readonly algorithm: "sha256" | "sha512";
      readonly parts: readonly SignedPart[];
    };

const signedPart: z.ZodType<SignedPart> = z.lazy(() =>
  z.discriminatedUnion("type", [
    z.strictObject({ type: z.literal("timestamp") }),
    z.strictObject({ type: z.literal("nonce") }),
    z.strictObject({ type: z.literal("method") }),
    z.strictObject({ type: z.literal("path") }),
    z.strictObject({ type: z.literal("pathAndQuery") }),
    z.strictObject({ type: z.literal("query") }),
    z.strictObject({ type: z.literal("body") }),
    z.strictObject({ type: z.literal("literal"), value: z.string().max(256) }),
    z.strictObject({
      type: z.literal("digest"),
      algorithm: z.enum(["sha256", "sha512"]),
      parts: z.array(signedPart).min(1).max(16),
    }),
  ]),
);

const valuePlacement = z.discriminatedUnion("in", [
  z.strictObject({ in: z.literal("query"), name: paramName }),
  z.strictObject({ in: z.literal("header"), name: headerName }),
  z.strictObject({ in: z.literal("body"), name: paramName }),
]);

const timestampUnit = z.enum(["ms", "s"]);

const hmacRecipe = z.strictObject({
  /** Field holding the public key id, sent in `apiKeyHeader`. */
  keyField: fieldName,
  /** Field holding the signing secret; it is never sent. */
  secretField: fieldName,
  algorithm: z.enum(["sha256", "sha512"]),
  /** `base64`: the stored secret is base64 text and the HMAC key is its decoded bytes. */
  secretEncoding: z.enum(["raw", "base64"]),
  signatureEncoding: z.enum(["hex", "base64"]),
  apiKeyHeader: headerName,
  /** Unix time in milliseconds or whole seconds, read from the broker's clock. */
  timestamp: z.optional(
    z.discriminatedUnion("in", [
      z.strictObject({ in: z.literal("query"), name: paramName, unit: timestampUnit }),
      z.strictObject({ in: z.literal("header"), name: headerName, unit: timestampUnit }),
      z.strictObject({ in: z.literal("body"), name: paramName, unit: timestampUnit }),
    ]),
  ),
  /** A strictly increasing integer per secret (nonce-source.ts). */
  nonce: z.optional(valuePlacement),
  /** Query placement appends the signature as the very last parameter. */
  signature: z.discriminatedUnion("in", [
    z.strictObject({ in: z.literal("query"), name: paramName }),
    z.strictObject({ in: z.literal("header"), name: headerName }),
  ]),
  message: z.array(signedPart).min(1).max(16),
  /** Further fields sent verbatim as headers (e.g. Coinbase's passphrase). */
  fieldHeaders: z.optional(z.array(z.strictObject({ name: headerName, field: fieldName })).max(4)),
  /**
   * "form": the provider reads request bodies as application/x-www-form-urlencoded (Binance
   * signs query + body as one parameter list). A body sent without a content type gets the form
   * type; a body with another type is refused (F5). Implied when values are placed in the body.
   */
  bodyFormat: z.optional(z.literal("form")),
});

export const authSchemeSchema = z.discriminatedUnion("type", [
  z.strictObject({ type: z.literal("bearer"), field: fieldName }),
  z.strictObject({ type: z.literal("header"), name: headerName, field: fieldName }),
  z.strictObject({ type: z.literal("query"), param: paramName, field: fieldName }),
  z.strictObject({ type: z.literal("basic"), usernameField: fieldName, passwordField: fieldName }),
  z.strictObject({ type: z.literal("hmac"), recipe: hmacRecipe }),
  z.strictObject({ type: z.literal("facebook"), accessTokenField: fieldName, appSecretField: fieldName }),
]);

export const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/**
 * One operation class rule: the endpoints (methods x path patterns, same syntax as
 * `pathPatterns`) that `class` names. Rules are tried in order and the first match wins, so
 * narrow dangerous rules go before broad ones (providers/README.md).
 */
const operationRule = z.strictObject({
  class: z.enum(OPERATION_CLASSES),
  methods: z.array(z.enum(HTTP_METHODS)).min(1),
  paths: z.array(z.string().min(1).max(512)).min(1).max(64),
});

export const providerSchema = z.strictObject({
  id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, "ids are lower-case letters, digits and dashes"),
  displayName: z.string().min(1).max(100),
  baseUrl: z.string().max(2048),
  allowedHosts: z.array(z.string().min(1).max(253)).min(1).max(16),
  allowedMethods: z.array(z.enum(HTTP_METHODS)).min(1),
  pathPatterns: z.array(z.string().min(1).max(512)).min(1).max(64),
  requiredFields: z.array(fieldName).min(1).max(8),
  auth: authSchemeSchema,
  timeoutMs: z.int().min(100).max(300_000),
  maxResponseBytes: z
    .int()
    .min(1)
    .max(1024 ** 3),
  maxRequestBytes: z.optional(
    z
      .int()
      .min(0)
      .max(64 * 1024 ** 2),
  ),
  allowLoopback: z.optional(z.boolean()),
  /**
   * Response fields that carry credentials (e.g. Graph's page `access_token`), replaced by
   * "[redacted]" before an answer leaves the broker; `paths` absent means every endpoint.
   */
  redactResponseFields: z.optional(
    z
      .array(
        z.strictObject({
          paths: z.optional(z.array(z.string().min(1).max(512)).min(1).max(64)),
          fields: z
            .array(
              z
                .string()
                .regex(/^[A-Za-z0-9_.-]{1,64}$/, "response field names are 1-64 of A-Z a-z 0-9 _ . -"),
            )
            .min(1)
            .max(32),
        }),
      )
      .max(16),
  ),
  /** How a new key is inspected at PutSecret (inspection-recipe.ts); absent: not inspected. */
  inspection: z.optional(inspectionSchema),
  operations: z.array(operationRule).min(1).max(128),
  /** The grant of a secret stored without one; never a dangerous class (checked in the registry). */
  defaultGrant: z.array(z.enum(OPERATION_CLASSES)).max(OPERATION_CLASSES.length),
  /** Calls per secret and per caller key, provider-wide and per operation class (rate-limit-schema.ts). */
  rateLimits: z.optional(rateLimitsSchema),
  /**
   * OAuth connections (issue 15): the broker runs the authorization-code flow and stores the
   * tokens as the user's secret (fields `access_token` and optional `refresh_token`).
   */
  oauth: z.optional(oauthSchema),
});

export const registryFileSchema = z.strictObject({
  $comment: z.optional(z.string()),
  providers: z.array(z.unknown()).min(1),
});

/** How the broker authenticates to a provider, as declared in the registry. */
export type AuthScheme = z.infer<typeof authSchemeSchema>;
/** A declarative HMAC request-signing recipe. */
export type HmacRecipe = z.infer<typeof hmacRecipe>;
/** One validated provider definition. */
export type ProviderDefinition = Readonly<z.infer<typeof providerSchema>>;
