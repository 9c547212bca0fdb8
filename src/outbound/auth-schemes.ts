import { BrokerError } from "../errors.js";
import {
  type CredentialInput,
  fieldBytes,
  headerValue,
  type PreparedRequest,
  utf8Value,
  withCredential,
} from "./credential-request.js";
import { hmacRecipeProblems, signHmacRequest } from "./hmac-scheme.js";
import { appSecretProof } from "./hmac-signing.js";
import type { AuthScheme, ProviderDefinition } from "./provider-schema.js";

/** Header, query and form-field names the broker owns for a scheme; callers may not set them. */
export interface ReservedNames {
  /** Lower-case header names. */
  readonly headers: ReadonlySet<string>;
  /** Lower-case query parameter names. */
  readonly params: ReadonlySet<string>;
  /** Lower-case form body field names. */
  readonly bodyFields: ReadonlySet<string>;
}

type SchemeType = AuthScheme["type"];
type SchemeOf<T extends SchemeType> = Extract<AuthScheme, { readonly type: T }>;
type Placement = { readonly in: "query" | "header" | "body"; readonly name: string };

/** Names a scheme owns, as written in the registry (any case). */
interface OwnedNames {
  readonly headers?: readonly string[];
  readonly params?: readonly string[];
  /** Values placed in a request part (HMAC timestamp, nonce, signature). */
  readonly placements?: ReadonlyArray<Placement | undefined>;
}

/** Everything the broker does with one scheme type: one entry each in AUTH_SCHEMES. */
interface SchemeRules<S extends AuthScheme> {
  /** Every secret field the scheme reads, so the registry can insist they are required. */
  credentialFields(scheme: S): string[];
  /** Header, query and form names the broker sets for this scheme; callers may not set them. */
  ownedNames(scheme: S): OwnedNames;
  /** Registry problems the schema cannot express (a provider's methods vs the scheme, ...). */
  problems?(scheme: S, provider: ProviderDefinition): string[];
  /** Adds the credential to a request whose caller parts were already checked. */
  inject(input: CredentialInput, scheme: S, body: Buffer): PreparedRequest;
}

/**
 * The schemes, keyed by type: adding one to provider-schema.ts's authSchemeSchema fails to
 * compile until it has an entry here, and the entry is the only other place to touch.
 */
const AUTH_SCHEMES: { readonly [T in SchemeType]: SchemeRules<SchemeOf<T>> } = {
  bearer: {
    credentialFields: (scheme) => [scheme.field],
    ownedNames: () => ({ headers: ["authorization"] }),
    inject: (input, scheme, body) =>
      withCredential(input, body, [["authorization", `Bearer ${headerValue(input, scheme.field)}`]], []),
  },
  header: {
    credentialFields: (scheme) => [scheme.field],
    ownedNames: (scheme) => ({ headers: [scheme.name] }),
    inject: (input, scheme, body) =>
      withCredential(input, body, [[scheme.name, headerValue(input, scheme.field)]], []),
  },
  query: {
    credentialFields: (scheme) => [scheme.field],
    ownedNames: (scheme) => ({ params: [scheme.param] }),
    inject: (input, scheme, body) =>
      withCredential(input, body, [], [[scheme.param, utf8Value(input, scheme.field)]]),
  },
  basic: {
    credentialFields: (scheme) => [scheme.usernameField, scheme.passwordField],
    ownedNames: () => ({ headers: ["authorization"] }),
    inject(input, scheme, body) {
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
      const sent = withCredential(input, body, [["authorization", `Basic ${encoded}`]], []);
      return { ...sent, derivedSecrets: [Buffer.from(encoded, "latin1")] };
    },
  },
  facebook: {
    credentialFields: (scheme) => [scheme.accessTokenField, scheme.appSecretField],
    ownedNames: () => ({ params: ["access_token", "appsecret_proof", "appsecret_time"] }),
    inject(input, scheme, body) {
      const token = fieldBytes(input, scheme.accessTokenField);
      const proof = appSecretProof(fieldBytes(input, scheme.appSecretField), token);
      const sent = withCredential(
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
    },
  },
  hmac: {
    credentialFields: ({ recipe }) => [
      recipe.keyField,
      recipe.secretField,
      ...(recipe.fieldHeaders ?? []).map((h) => h.field),
    ],
    ownedNames: ({ recipe }) => ({
      headers: [recipe.apiKeyHeader, ...(recipe.fieldHeaders ?? []).map((h) => h.name)],
      placements: [recipe.signature, recipe.timestamp, recipe.nonce],
    }),
    problems: ({ recipe }, provider) => hmacRecipeProblems(recipe, provider),
    inject: (input, scheme, body) => signHmacRequest(input, scheme.recipe, body),
  },
};

/** The table entry for `scheme`'s type. */
function rulesFor<T extends SchemeType>(
  scheme: SchemeOf<T> & { readonly type: T },
): SchemeRules<SchemeOf<T>> {
  return AUTH_SCHEMES[scheme.type];
}

/** Every secret field a scheme reads, so the registry can insist they are required. */
export function credentialFields(scheme: AuthScheme): string[] {
  return rulesFor(scheme).credentialFields(scheme);
}

export function reservedNames(scheme: AuthScheme): ReservedNames {
  const owned = rulesFor(scheme).ownedNames(scheme);
  // Header names folded as header-policy.ts reads the caller's ("_" as "-").
  const headerKey = (name: string): string => name.toLowerCase().replaceAll("_", "-");
  const headers = new Set((owned.headers ?? []).map(headerKey));
  const params = new Set((owned.params ?? []).map((name) => name.toLowerCase()));
  const bodyFields = new Set<string>();
  for (const p of owned.placements ?? []) {
    if (p === undefined) continue;
    if (p.in === "header") headers.add(headerKey(p.name));
    else (p.in === "query" ? params : bodyFields).add(p.name.toLowerCase());
  }
  return { headers, params, bodyFields };
}

/** What the registry must refuse about a provider's auth scheme beyond its schema; empty when none. */
export function authSchemeProblems(provider: ProviderDefinition): string[] {
  return rulesFor(provider.auth).problems?.(provider.auth, provider) ?? [];
}

/**
 * Adds the credential to a request whose caller parts were already checked. The credential
 * headers go LAST, after every caller header, and query credentials after every caller
 * parameter (a signature after everything it signs).
 */
export function injectCredential(input: CredentialInput): PreparedRequest {
  const { scheme } = input;
  return rulesFor(scheme).inject(input, scheme, Buffer.from(input.body));
}
