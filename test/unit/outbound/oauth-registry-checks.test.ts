import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { parseProviderRegistry } from "../../../src/outbound/provider-registry.js";

function oauthProvider(oauth: Record<string, unknown> = {}, overrides: Record<string, unknown> = {}) {
  return {
    id: "example",
    displayName: "Example",
    baseUrl: "https://api.example.com/v1",
    allowedHosts: ["api.example.com", "auth.example.com"],
    allowedMethods: ["GET"],
    pathPatterns: ["/**"],
    requiredFields: ["access_token"],
    auth: { type: "bearer", field: "access_token" },
    timeoutMs: 5000,
    maxResponseBytes: 1024,
    operations: [{ class: "read", methods: ["GET"], paths: ["/**"] }],
    defaultGrant: ["read"],
    oauth: {
      authorizationEndpoint: "https://auth.example.com/authorize",
      tokenEndpoint: "https://auth.example.com/token",
      revocationEndpoint: "https://auth.example.com/revoke",
      scopes: ["read"],
      scopeSeparator: " ",
      pkce: "S256",
      tokenAuthMethod: "client_secret_basic",
      refresh: { refreshTokens: true, rotation: true, marginSeconds: 60 },
      ...oauth,
    },
    ...overrides,
  };
}

function problemsOf(entry: unknown, production = true): string {
  try {
    parseProviderRegistry({ providers: [entry] }, { production });
  } catch (err) {
    expect(err).toBeInstanceOf(BrokerError);
    return (err as BrokerError).message;
  }
  throw new Error("expected the registry to be refused");
}

describe("provider oauth settings", () => {
  it("accepts a complete oauth block", () => {
    const registry = parseProviderRegistry({ providers: [oauthProvider()] }, { production: true });
    expect(registry.get("example")?.definition.oauth?.tokenAuthMethod).toBe("client_secret_basic");
  });

  it("J172 refuses token, revocation and authorization endpoints whose host is not in allowedHosts", () => {
    const message = problemsOf(
      oauthProvider({
        tokenEndpoint: "https://evil.example.net/token",
        revocationEndpoint: "https://169.254.169.254/revoke",
        authorizationEndpoint: "https://phish.example.org/authorize",
      }),
    );
    expect(message).toContain('oauth.tokenEndpoint host "evil.example.net" is not in allowedHosts');
    expect(message).toContain('oauth.revocationEndpoint host "169.254.169.254" is not in allowedHosts');
    expect(message).toContain('oauth.authorizationEndpoint host "phish.example.org" is not in allowedHosts');
  });

  it("J173 refuses plain http, credentials, queries and non-canonical endpoint URLs", () => {
    const message = problemsOf(
      oauthProvider({
        tokenEndpoint: "http://auth.example.com/token",
        revocationEndpoint: "https://user:pw@auth.example.com/revoke",
        authorizationEndpoint: "https://auth.example.com/authorize?prompt=none",
      }),
    );
    expect(message).toContain("oauth.tokenEndpoint must be https");
    expect(message).toContain("oauth.revocationEndpoint must not carry credentials");
    expect(message).toContain("oauth.authorizationEndpoint must not have a query or fragment");
    expect(problemsOf(oauthProvider({ tokenEndpoint: "https://AUTH.example.com/token" }))).toContain(
      "must be written canonically",
    );
  });

  it("J174 has no PKCE opt-out and refuses authorization parameters the broker sets itself", () => {
    expect(problemsOf(oauthProvider({ pkce: "plain" }))).toContain("oauth.pkce");
    expect(problemsOf(oauthProvider({ pkce: undefined }))).toContain("oauth.pkce");
    const message = problemsOf(
      oauthProvider({ authorizationParams: { redirect_uri: "https://x", State: "1" } }),
    );
    expect(message).toContain('must not set "redirect_uri"');
    expect(message).toContain('must not set "State"');
  });

  it("an oauth provider injects only access_token and rotation needs refresh tokens", () => {
    const message = problemsOf(
      oauthProvider(
        { refresh: { refreshTokens: false, rotation: true, marginSeconds: 60 } },
        { requiredFields: ["token"], auth: { type: "bearer", field: "token" } },
      ),
    );
    expect(message).toContain('requiredFields must be exactly ["access_token"]');
    expect(message).toContain('auth scheme may read only "access_token"');
    expect(message).toContain("rotation needs refreshTokens");
    expect(problemsOf(oauthProvider({ scopes: ["a b"] }))).toContain("scope tokens");
  });

  it("allows plain http endpoints only for loopback providers outside production", () => {
    const loopback = oauthProvider(
      { tokenEndpoint: "http://127.0.0.1:9999/token", revocationEndpoint: undefined },
      { allowedHosts: ["api.example.com", "auth.example.com", "127.0.0.1"], allowLoopback: true },
    );
    expect(() => parseProviderRegistry({ providers: [loopback] }, { production: false })).not.toThrow();
    expect(problemsOf(loopback, true)).toContain("oauth.tokenEndpoint must be https");
  });
});
