import { createHash, randomBytes } from "node:crypto";
import { Agent, fetch } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  type OAuthClient,
  type OAuthThirdParty,
  startOAuthThirdParty,
} from "../../support/oauth-third-party.js";

// The test double the OAuth e2e suites rely on, checked on its own: if it accepted what a real
// provider refuses (no PKCE, a reused refresh token, an expired access token), the broker's
// tests against it would prove nothing.

const REDIRECT_URI = "https://broker.test/oauth/callback";

describe("the oidc-provider third party", () => {
  let provider: OAuthThirdParty;
  let client: OAuthClient;
  let agent: Agent;

  beforeAll(async () => {
    provider = await startOAuthThirdParty({ accessTokenTtlSeconds: 2 });
    client = provider.registerClient({ redirectUris: [REDIRECT_URI] });
    agent = new Agent({ connect: { ca: provider.ca } });
  });

  afterAll(async () => {
    await agent?.close();
    await provider?.close();
  });

  function authorizationUrl(options: { verifier?: string; state?: string } = {}): string {
    const url = new URL(provider.authorizationEndpoint);
    url.search = new URLSearchParams({
      client_id: client.clientId,
      response_type: "code",
      redirect_uri: REDIRECT_URI,
      scope: "profile:read files:read",
      state: options.state ?? randomBytes(8).toString("hex"),
      ...(options.verifier === undefined
        ? {}
        : {
            code_challenge: createHash("sha256").update(options.verifier).digest("base64url"),
            code_challenge_method: "S256",
          }),
    }).toString();
    return url.href;
  }

  const post = (url: string, form: Record<string, string>) =>
    fetch(url, {
      method: "POST",
      dispatcher: agent,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams(form),
    });

  const refresh = (refreshToken: string) =>
    post(provider.tokenEndpoint, {
      grant_type: "refresh_token",
      refresh_token: refreshToken,
      client_id: client.clientId,
      client_secret: client.clientSecret,
    });

  const callResource = (accessToken: string) =>
    fetch(provider.resourceUrl, { dispatcher: agent, headers: { authorization: `Bearer ${accessToken}` } });

  async function connect(user: string) {
    const verifier = randomBytes(32).toString("base64url");
    const redirect = await provider.authorize(authorizationUrl({ verifier, state: "s1" }), { user });
    const code = redirect.searchParams.get("code") ?? "";
    return provider.exchangeCode(client, code, REDIRECT_URI, verifier);
  }

  it("logs in and consents headlessly, returning the redirect to the client with a code and the state", async () => {
    const verifier = randomBytes(32).toString("base64url");
    const redirect = await provider.authorize(authorizationUrl({ verifier, state: "state-1" }), {
      user: "alice",
    });
    expect(`${redirect.origin}${redirect.pathname}`).toBe(REDIRECT_URI);
    expect(redirect.searchParams.get("state")).toBe("state-1");
    const code = redirect.searchParams.get("code") ?? "";
    const tokens = await provider.exchangeCode(client, code, REDIRECT_URI, verifier);
    expect(tokens).toMatchObject({ token_type: "Bearer", expires_in: 2, scope: "profile:read files:read" });
    expect(typeof tokens.refresh_token).toBe("string");
    expect(provider.issuedValues.has(tokens.access_token)).toBe(true);
    expect(provider.issuedValues.has(tokens.refresh_token ?? "")).toBe(true);
  });

  it("refuses an authorization without PKCE", async () => {
    const redirect = await provider.authorize(authorizationUrl(), { user: "alice" });
    expect(redirect.searchParams.get("error")).toBe("invalid_request");
    expect(redirect.searchParams.get("code")).toBeNull();
  });

  it("refuses a code exchanged with the wrong verifier", async () => {
    const verifier = randomBytes(32).toString("base64url");
    const redirect = await provider.authorize(authorizationUrl({ verifier }), { user: "alice" });
    const code = redirect.searchParams.get("code") ?? "";
    await expect(provider.exchangeCode(client, code, REDIRECT_URI, `${verifier}x`)).rejects.toThrow(
      /invalid_grant/,
    );
  });

  it("sends access_denied back to the client when the user denies consent", async () => {
    const redirect = await provider.authorize(authorizationUrl({ verifier: "v".repeat(43) }), {
      user: "alice",
      consent: "deny",
    });
    expect(redirect.searchParams.get("error")).toBe("access_denied");
  });

  it("serves the protected resource only to a live access token, and never echoes it", async () => {
    const tokens = await connect("bob");
    const ok = await callResource(tokens.access_token);
    expect(ok.status).toBe(200);
    const text = await ok.text();
    expect(JSON.parse(text)).toEqual({ user: "bob", scope: "profile:read files:read" });
    expect(text).not.toContain(tokens.access_token);
    expect((await callResource("not-a-token-at-all")).status).toBe(401);
    expect(provider.resourceCalls.slice(-2)).toEqual([
      { status: 200, user: "bob" },
      { status: 401, user: undefined },
    ]);
  });

  it("expires access tokens after the configured lifetime", async () => {
    const tokens = await connect("carol");
    expect((await callResource(tokens.access_token)).status).toBe(200);
    // Bounded polling: the lifetime is 2 s; the provider's clock has one-second resolution.
    let status = 200;
    for (let i = 0; i < 50 && status === 200; i++) {
      await new Promise((r) => setTimeout(r, 100));
      status = (await callResource(tokens.access_token)).status;
    }
    expect(status).toBe(401);
  });

  it("rotates the refresh token on every refresh, and revokes the grant when a rotated-out one is reused", async () => {
    const tokens = await connect("dave");
    const first = (await (await refresh(tokens.refresh_token ?? "")).json()) as {
      access_token: string;
      refresh_token: string;
    };
    expect(first.refresh_token).not.toBe(tokens.refresh_token);
    expect((await callResource(first.access_token)).status).toBe(200);

    const before = provider.grants.length;
    const reused = await refresh(tokens.refresh_token ?? "");
    expect(reused.status).toBe(400);
    expect(((await reused.json()) as { error: string }).error).toBe("invalid_grant");
    expect(provider.grants.slice(before)).toEqual([
      { grantType: "refresh_token", error: "invalid_grant", clientId: client.clientId },
    ]);
    // Reuse detection: the newer refresh token and its access token are gone too.
    expect((await refresh(first.refresh_token)).status).toBe(400);
    expect((await callResource(first.access_token)).status).toBe(401);
  });

  it("revokes a refresh token at the RFC 7009 endpoint, with the grant behind it", async () => {
    const tokens = await connect("erin");
    const revoked = await post(provider.revocationEndpoint, {
      token: tokens.refresh_token ?? "",
      token_type_hint: "refresh_token",
      client_id: client.clientId,
      client_secret: client.clientSecret,
    });
    expect(revoked.status).toBe(200);
    expect(provider.revocations.at(-1)).toEqual({
      tokenTypeHint: "refresh_token",
      kind: "RefreshToken",
      status: 200,
    });
    expect((await refresh(tokens.refresh_token ?? "")).status).toBe(400);
    expect((await callResource(tokens.access_token)).status).toBe(401);
  });

  it("revokes every grant of a user server-side (the user removed the app at the provider)", async () => {
    const tokens = await connect("frank");
    expect(await provider.revokeGrants("frank")).toBe(1);
    expect((await callResource(tokens.access_token)).status).toBe(401);
    const refused = await refresh(tokens.refresh_token ?? "");
    expect(((await refused.json()) as { error: string }).error).toBe("invalid_grant");
  });

  it("answers 503 at the token endpoint while down, and serves again when back", async () => {
    const tokens = await connect("grace");
    provider.setDown(true);
    expect((await refresh(tokens.refresh_token ?? "")).status).toBe(503);
    provider.setDown(false);
    expect((await refresh(tokens.refresh_token ?? "")).status).toBe(200);
  });

  it("authenticates a client_secret_basic app with HTTP Basic only", async () => {
    const basic = provider.registerClient({
      redirectUris: [REDIRECT_URI],
      tokenEndpointAuthMethod: "client_secret_basic",
    });
    const verifier = randomBytes(32).toString("base64url");
    const url = new URL(authorizationUrl({ verifier }));
    url.searchParams.set("client_id", basic.clientId);
    const code = (await provider.authorize(url.href, { user: "heidi" })).searchParams.get("code") ?? "";
    const form = {
      grant_type: "authorization_code",
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
    };
    const inBody = await post(provider.tokenEndpoint, {
      ...form,
      client_id: basic.clientId,
      client_secret: basic.clientSecret,
    });
    expect(inBody.status).toBe(401);
    const basicAuth = Buffer.from(`${basic.clientId}:${basic.clientSecret}`).toString("base64");
    const inHeader = await fetch(provider.tokenEndpoint, {
      method: "POST",
      dispatcher: agent,
      headers: { "content-type": "application/x-www-form-urlencoded", authorization: `Basic ${basicAuth}` },
      body: new URLSearchParams(form),
    });
    expect(inHeader.status).toBe(200);
  });
});
