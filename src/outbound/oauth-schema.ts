import { z } from "zod";

// The `oauth` block of a provider definition (issue 15 item 1). Cross-field rules (endpoint hosts
// in allowedHosts, https, the token injected from `access_token`) live in oauth-registry-checks.ts.

/** RFC 6749 §3.3 scope-token characters; the separators (space, comma) are excluded. */
const scopeToken = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]+$/, "scopes are RFC 6749 scope tokens without commas");

const paramName = z
  .string()
  .max(64)
  .regex(/^[A-Za-z0-9_.\-~]+$/, "parameter names are unreserved URL characters only");

/** Authorization and token request parameters the broker always sets itself. */
export const RESERVED_OAUTH_PARAMS: ReadonlySet<string> = new Set([
  "response_type",
  "client_id",
  "client_secret",
  "redirect_uri",
  "scope",
  "state",
  "code",
  "code_challenge",
  "code_challenge_method",
  "code_verifier",
  "grant_type",
  "refresh_token",
  "token",
  "fb_exchange_token",
]);

export const oauthSchema = z.strictObject({
  /** Where the user's browser is sent to consent; never fetched by the broker. */
  authorizationEndpoint: z.string().max(2048),
  /** Code exchange and refresh (RFC 6749 §3.2). */
  tokenEndpoint: z.string().max(2048),
  /** RFC 7009 token revocation, where the provider has one. */
  revocationEndpoint: z.optional(z.string().max(2048)),
  /** The scopes a caller may ask for: StartConnection's scopes must be a subset. */
  scopes: z.array(scopeToken).min(1).max(64),
  /** How the scope parameter joins scopes (RFC 6749 says space; Slack and Facebook use commas). */
  scopeSeparator: z.enum([" ", ","]),
  /**
   * PKCE (RFC 7636) is always used, always S256: there is no opt-out. A provider that does not
   * check it ignores the two parameters; the field is here so the registry says so explicitly.
   */
  pkce: z.literal("S256"),
  /** How the broker authenticates to the token and revocation endpoints (RFC 6749 §2.3.1). */
  tokenAuthMethod: z.enum(["client_secret_post", "client_secret_basic"]),
  /**
   * `token_type` values accepted from the token endpoint, compared case-insensitively. Default
   * ["bearer"]; Slack's v2 flow answers "bot".
   */
  tokenTypes: z.optional(
    z
      .array(z.string().regex(/^[A-Za-z0-9_-]{1,32}$/))
      .min(1)
      .max(4),
  ),
  /** Fixed extra authorization parameters (Google's access_type=offline); never a reserved name. */
  authorizationParams: z.optional(z.record(paramName, z.string().max(256))),
  refresh: z.strictObject({
    /** Whether the provider issues refresh tokens (stored as the `refresh_token` field). */
    refreshTokens: z.boolean(),
    /** Each refresh may answer a new refresh token that replaces the old one (RFC 6749 §6). */
    rotation: z.boolean(),
    /** A token expiring within this many seconds is refreshed before use. */
    marginSeconds: z.int().min(0).max(86_400),
  }),
  /**
   * Facebook Login: exchange the short-lived token for a long-lived one at connect
   * (grant_type=fb_exchange_token at the token endpoint), and again before it expires.
   */
  longLivedExchange: z.optional(z.literal("facebook")),
});

/** A provider's OAuth settings, as declared in the registry. */
export type OAuthSettings = z.infer<typeof oauthSchema>;
