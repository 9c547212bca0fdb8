import { credentialFields } from "./auth-schemes.js";
import { RESERVED_OAUTH_PARAMS } from "./oauth-schema.js";
import type { ProviderDefinition } from "./provider-schema.js";

/** The sealed fields of an OAuth connection: the token the auth scheme injects, and the refresh token. */
export const OAUTH_ACCESS_TOKEN_FIELD = "access_token";
export const OAUTH_REFRESH_TOKEN_FIELD = "refresh_token";

/**
 * What the registry refuses about a provider's `oauth` block beyond its schema. The broker itself
 * reaches the token and revocation endpoints with the client secret and the user's tokens, so they
 * pass the same rules as calls: https (plain http only for allowLoopback outside production), a
 * host in allowedHosts (the guarded connector dials only those), no credentials, query or fragment.
 * The authorization endpoint is only ever a browser redirect, but it is held to the same rules so
 * a registry cannot send users' consent to a host the operator never listed.
 */
export function oauthProblems(p: ProviderDefinition, production: boolean): string[] {
  const oauth = p.oauth;
  if (oauth === undefined) return [];
  const problems: string[] = [];
  const endpoints: Array<[string, string | undefined]> = [
    ["authorizationEndpoint", oauth.authorizationEndpoint],
    ["tokenEndpoint", oauth.tokenEndpoint],
    ["revocationEndpoint", oauth.revocationEndpoint],
  ];
  for (const [name, value] of endpoints) {
    if (value === undefined) continue;
    problems.push(...endpointProblems(`oauth.${name}`, value, p, production));
  }
  // The connection's token is what the scheme injects: one field, `access_token`.
  if (p.requiredFields.length !== 1 || p.requiredFields[0] !== OAUTH_ACCESS_TOKEN_FIELD) {
    problems.push(`an oauth provider's requiredFields must be exactly ["${OAUTH_ACCESS_TOKEN_FIELD}"]`);
  }
  const injected = credentialFields(p.auth);
  if (injected.some((field) => field !== OAUTH_ACCESS_TOKEN_FIELD)) {
    problems.push(`an oauth provider's auth scheme may read only "${OAUTH_ACCESS_TOKEN_FIELD}"`);
  }
  for (const name of Object.keys(oauth.authorizationParams ?? {})) {
    if (RESERVED_OAUTH_PARAMS.has(name.toLowerCase())) {
      problems.push(`oauth.authorizationParams must not set "${name}" (the broker sets it)`);
    }
  }
  if (new Set(oauth.scopes).size !== oauth.scopes.length) problems.push("oauth.scopes has duplicates");
  if (oauth.refresh.rotation && !oauth.refresh.refreshTokens) {
    problems.push("oauth.refresh.rotation needs refreshTokens");
  }
  if (oauth.longLivedExchange !== undefined && oauth.refresh.refreshTokens) {
    problems.push("oauth.longLivedExchange replaces refresh tokens; set refresh.refreshTokens to false");
  }
  return problems;
}

function endpointProblems(
  label: string,
  value: string,
  p: ProviderDefinition,
  production: boolean,
): string[] {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return [`${label} is not a URL`];
  }
  const problems: string[] = [];
  if (url.protocol !== "https:" && (production || !p.allowLoopback || url.protocol !== "http:")) {
    problems.push(`${label} must be https (plain http only for allowLoopback providers outside production)`);
  }
  if (url.username !== "" || url.password !== "") problems.push(`${label} must not carry credentials`);
  if (url.search !== "" || url.hash !== "" || value.includes("?") || value.includes("#")) {
    problems.push(`${label} must not have a query or fragment`);
  }
  if (url.href !== value) problems.push(`${label} must be written canonically (${url.href})`);
  if (!p.allowedHosts.includes(url.hostname)) {
    problems.push(`${label} host "${url.hostname}" is not in allowedHosts`);
  }
  return problems;
}
