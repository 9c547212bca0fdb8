import { createHash, generateKeyPairSync, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import Provider, { errors } from "oidc-provider";
import { Agent, fetch, type RequestInit, type Response } from "undici";
import { createTestCertificates } from "./https-upstream.js";

/**
 * A real OpenID provider (oidc-provider) on https://127.0.0.1 (a throwaway CA), set up the way a deployment would set up
 * Auth0 for the broker: RS256 JWT access tokens for the broker's API (resource indicators), a
 * first-party web client that logs users in with the authorization-code flow, and back-channel
 * logout to that client. Logins run without a browser: the login "page" accepts the `login_hint`
 * as the user, and consent is pre-granted (first-party app), so a login is a few HTTP requests
 * with a cookie jar. Logouts are RP-initiated (`end_session`), so the logout token the broker
 * receives is minted and posted by the provider itself.
 *
 * Differences from Auth0 the broker must be configured for:
 * - the issuer has no trailing slash, and the JWKS is at `/jwks`, not `/.well-known/jwks.json`
 *   (set AUTH0_JWKS_URL);
 * - the permission is an OAuth scope of the API (`scope`), not an RBAC `permissions` entry;
 * - access tokens name the client in `client_id`; `azp` (for AUTH0_ALLOWED_AZP) and `sid` are
 *   added with `extraTokenClaims`, as Auth0 has them, so a logout can also end one session. The
 *   logout token carries both `sub` and `sid`.
 */
export interface OidcIssuer {
  /** Exact `iss` of its tokens: `https://127.0.0.1:<port>` (no trailing slash). */
  readonly issuer: string;
  /** The CA that signed the issuer's certificate (PEM): the broker's KEYBROKER_ISSUER_CA_FILE. */
  readonly ca: string;
  readonly jwksUrl: string;
  /** The broker's API identifier: the resource the access tokens are for. */
  readonly audience: string;
  /** The scope every access token carries (the broker's AUTH0_REQUIRED_PERMISSION). */
  readonly permission: string;
  /** The main app's client id: the logout tokens' `aud` (the broker's KEYBROKER_LOGOUT_AUDIENCES). */
  readonly clientId: string;
  /** The key id the provider signs with (a forger would reuse it). */
  readonly kid: string;
  /** Starts serving, with the client's back-channel logout URI known (a broker's Connect port). */
  serve(backchannelLogoutUri: string): void;
  /** Logs `sub` in through the authorization-code flow; returns the access token and the browser. */
  login(sub: string): Promise<LoggedIn>;
  /** Every logout token the provider posted, and what came of each post, in order. */
  readonly backchannelPosts: readonly BackchannelPost[];
  close(): Promise<void>;
}

export interface LoggedIn {
  readonly accessToken: string;
  /** RP-initiated logout in this browser; resolves once the provider has posted its logout tokens. */
  logout(): Promise<void>;
}

export interface BackchannelPost {
  readonly url: string;
  readonly logoutToken: string;
  readonly status: number | undefined;
}

const REDIRECT_URI = "https://main-app.test/callback";
// Each login is a handful of requests; a loop that does not end here has gone wrong.
const MAX_REDIRECTS = 10;

export async function startOidcIssuer(
  options: { audience?: string; permission?: string; clientId?: string } = {},
): Promise<OidcIssuer> {
  const audience = options.audience ?? "https://keybroker.oidc.test/api";
  const permission = options.permission ?? "secrets:use";
  const clientId = options.clientId ?? "main-app-oidc";
  const clientSecret = randomBytes(24).toString("base64url");
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const kid = `oidc-${randomBytes(4).toString("hex")}`;
  const jwk = { ...privateKey.export({ format: "jwk" }), kid, use: "sig", alg: "RS256" };
  const backchannelPosts: BackchannelPost[] = [];

  const certificates = createTestCertificates();
  // The test's own requests (the "browser" and the app's token request) trust the throwaway CA.
  const agent = new Agent({ connect: { ca: certificates.ca } });
  const trusted = (url: string | URL, init: RequestInit = {}) => fetch(url, { ...init, dispatcher: agent });

  let provider: Provider | undefined;
  const server = createServer({ key: certificates.key, cert: certificates.cert }, (req, res) => {
    if (provider === undefined) {
      res.writeHead(503).end();
      return;
    }
    if (req.url?.startsWith("/interaction/")) {
      void finishInteraction(provider, req, res);
      return;
    }
    provider.callback()(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const issuer = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;

  function serve(backchannelLogoutUri: string): void {
    provider = new Provider(issuer, {
      clients: [
        {
          client_id: clientId,
          client_secret: clientSecret,
          redirect_uris: [REDIRECT_URI],
          grant_types: ["authorization_code"],
          response_types: ["code"],
          backchannel_logout_uri: backchannelLogoutUri,
          backchannel_logout_session_required: true,
        },
      ],
      jwks: { keys: [jwk] },
      cookies: { keys: [randomBytes(32).toString("base64url")] },
      ttl: { AccessToken: 3_600, IdToken: 3_600, Interaction: 600, Grant: 3_600, Session: 3_600 },
      findAccount: (_ctx: unknown, sub: string) => ({ accountId: sub, claims: () => ({ sub }) }),
      interactions: {
        url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}`,
      },
      // A first-party app: the user never sees a consent screen, as with Auth0's "skip consent".
      loadExistingGrant: async (ctx: GrantContext) => {
        const existing = ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
        if (existing !== undefined) return ctx.oidc.provider.Grant.find(existing);
        const grant = new ctx.oidc.provider.Grant({
          accountId: ctx.oidc.session.accountId,
          clientId: ctx.oidc.client.clientId,
        });
        grant.addOIDCScope("openid");
        grant.addResourceScope(audience, permission);
        await grant.save();
        return grant;
      },
      // Auth0's access tokens carry `azp` (the client) and `sid`; oidc-provider's only if added here.
      extraTokenClaims: (_ctx: unknown, token: { kind: string; clientId: string; sid?: string }) =>
        token.kind === "AccessToken"
          ? { azp: token.clientId, ...(token.sid === undefined ? {} : { sid: token.sid }) }
          : undefined,
      // The provider's own outbound requests refuse loopback addresses (SSRF protection); the
      // broker here is on loopback, so its back-channel posts go through the plain fetch.
      fetch: async (url: string, init: globalThis.RequestInit & { dispatcher?: unknown }) => {
        const { dispatcher: _loopbackRefused, ...rest } = init;
        const logoutToken = new URLSearchParams(String(rest.body)).get("logout_token") ?? "";
        try {
          const response = await globalThis.fetch(url, rest);
          backchannelPosts.push({ url, logoutToken, status: response.status });
          return response;
        } catch (err) {
          backchannelPosts.push({ url, logoutToken, status: undefined });
          throw err;
        }
      },
      features: {
        devInteractions: { enabled: false },
        backchannelLogout: { enabled: true },
        rpInitiatedLogout: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => audience,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resource: string) => {
            if (resource !== audience) throw new errors.InvalidTarget();
            return {
              scope: permission,
              audience,
              accessTokenFormat: "jwt",
              jwt: { sign: { alg: "RS256" } },
            };
          },
        },
      },
    });
    // Quiet the provider's warnings about its development defaults; errors still surface as HTTP.
    provider.on("server_error", () => undefined);
  }

  async function login(sub: string): Promise<LoggedIn> {
    const browser = cookieJar(trusted);
    const verifier = randomBytes(32).toString("base64url");
    const authorize = new URL("/auth", issuer);
    authorize.search = new URLSearchParams({
      client_id: clientId,
      response_type: "code",
      redirect_uri: REDIRECT_URI,
      scope: `openid ${permission}`,
      resource: audience,
      login_hint: sub,
      state: randomBytes(8).toString("hex"),
      code_challenge: createHash("sha256").update(verifier).digest("base64url"),
      code_challenge_method: "S256",
    }).toString();

    let location = authorize.href;
    let code: string | null = null;
    for (let i = 0; i < MAX_REDIRECTS && code === null; i++) {
      const response = await browser.fetch(location);
      const next = response.headers.get("location");
      if (next === null) throw new Error(`login stopped at ${response.status}: ${await response.text()}`);
      location = new URL(next, issuer).href;
      if (location.startsWith(REDIRECT_URI)) {
        const params = new URL(location).searchParams;
        code = params.get("code");
        if (code === null) throw new Error(`login refused: ${params.get("error_description")}`);
      }
    }
    if (code === null) throw new Error("login did not reach the redirect URI");

    const tokenResponse = await trusted(new URL("/token", issuer), {
      method: "POST",
      headers: {
        authorization: `Basic ${Buffer.from(`${clientId}:${clientSecret}`).toString("base64")}`,
        "content-type": "application/x-www-form-urlencoded",
      },
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code,
        redirect_uri: REDIRECT_URI,
        code_verifier: verifier,
        resource: audience,
      }),
    });
    const tokens = (await tokenResponse.json()) as { access_token?: string; error_description?: string };
    if (tokens.access_token === undefined)
      throw new Error(`token request refused: ${tokens.error_description}`);

    return {
      accessToken: tokens.access_token,
      async logout() {
        const form = await browser.fetch(`${issuer}/session/end?client_id=${encodeURIComponent(clientId)}`);
        const xsrf = /name="xsrf" value="([^"]+)"/.exec(await form.text())?.[1];
        if (xsrf === undefined) throw new Error(`no logout form (${form.status})`);
        const confirmed = await browser.fetch(`${issuer}/session/end/confirm`, {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: new URLSearchParams({ xsrf, logout: "yes" }),
        });
        // The provider answers after its back-channel posts settled: 303 to "signed out".
        if (confirmed.status !== 303) throw new Error(`logout refused: ${confirmed.status}`);
      },
    };
  }

  return {
    issuer,
    ca: certificates.ca,
    jwksUrl: `${issuer}/jwks`,
    audience,
    permission,
    clientId,
    kid,
    serve,
    login,
    backchannelPosts,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await agent.close();
    },
  };
}

interface GrantContext {
  readonly oidc: {
    readonly provider: Provider;
    readonly client: { readonly clientId: string };
    readonly session: { readonly accountId: string; grantIdFor(clientId: string): string | undefined };
  };
}

/** The login page: whoever the client named in `login_hint` is logged in (a test has no password). */
async function finishInteraction(
  provider: Provider,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  try {
    const details = await provider.interactionDetails(req, res);
    const sub = details.params.login_hint;
    if (details.prompt.name !== "login" || typeof sub !== "string") {
      res.writeHead(400).end(`unexpected prompt ${details.prompt.name}`);
      return;
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: sub } },
      { mergeWithLastSubmission: false },
    );
  } catch (err) {
    res.writeHead(500).end(String(err));
  }
}

/** A browser's cookies for one origin: enough for the provider's session and interaction cookies. */
function cookieJar(send: (url: string, init?: RequestInit) => Promise<Response>): {
  fetch(url: string, init?: RequestInit): Promise<Response>;
} {
  const cookies = new Map<string, string>();
  return {
    async fetch(url, init = {}) {
      // Callers pass plain header objects; the cookie header is added to a copy.
      const headers: Record<string, string> = { ...(init.headers as Record<string, string> | undefined) };
      if (cookies.size > 0)
        headers.cookie = [...cookies].map(([name, value]) => `${name}=${value}`).join("; ");
      const response = await send(url, { ...init, headers, redirect: "manual" });
      for (const line of response.headers.getSetCookie()) {
        const [pair = ""] = line.split(";");
        const at = pair.indexOf("=");
        const name = pair.slice(0, at).trim();
        const value = pair.slice(at + 1).trim();
        if (value === "" || /expires=Thu, 01 Jan 1970/i.test(line)) cookies.delete(name);
        else cookies.set(name, value);
      }
      return response;
    },
  };
}
