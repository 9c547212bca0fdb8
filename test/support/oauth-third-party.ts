import { generateKeyPairSync, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import Provider from "oidc-provider";
import { Agent, fetch, type RequestInit, type Response } from "undici";
import { createTestCertificates, type TestCertificates } from "./https-upstream.js";

/**
 * A third-party OAuth provider (Google, GitHub, Slack...) played by a real authorization server,
 * oidc-provider, on https://127.0.0.1 with a throwaway CA. What the broker's OAuth connections
 * meet in production, it does for real: the authorization-code flow with PKCE S256 (required),
 * a user login and a consent screen, refresh tokens that rotate on every use (a rotated-out
 * refresh token presented again is reuse: the provider revokes the whole grant, as RFC 9700
 * §4.14 asks), access tokens of a few seconds, an RFC 7009 revocation endpoint, and a protected
 * resource that accepts only a live access token — so a proxied call that succeeds proves the
 * broker injected a working token.
 *
 * The "browser" is headless: `authorize` follows the redirects from an authorization URL,
 * posts the login and consent forms, and returns the redirect the provider sends back to the
 * client (the broker's callback), without following it.
 *
 * Every token-endpoint grant and every revocation is recorded, so a test can count refreshes
 * at the provider (one, when two brokers race) and see which failed and why.
 */
export interface OAuthThirdParty {
  /** `https://127.0.0.1:<port>`. */
  readonly issuer: string;
  /** The CA that signed the provider's certificate (PEM): trust it in the broker's outbound. */
  readonly ca: string;
  readonly port: number;
  readonly authorizationEndpoint: string;
  readonly tokenEndpoint: string;
  readonly revocationEndpoint: string;
  /** The protected resource: `GET` with `Authorization: Bearer <access token>`. */
  readonly resourceUrl: string;
  /** Scopes the provider knows (requested scopes must come from here). */
  readonly scopes: readonly string[];
  /** Registers an OAuth app (a confidential client) and returns its credentials. */
  registerClient(options: RegisterClientOptions): OAuthClient;
  /**
   * Runs the browser's part of an authorization: from `authorizationUrl` through login (as
   * `user`) and consent (granted, or denied with `consent: "deny"`) to the redirect back to the
   * client, which is returned (not followed).
   */
  authorize(authorizationUrl: string, options: { user: string; consent?: "grant" | "deny" }): Promise<URL>;
  /**
   * Exchanges a code as the client would (for tests of the provider itself and for seeding a
   * connection without the broker's connect flow).
   */
  exchangeCode(client: OAuthClient, code: string, redirectUri: string, verifier: string): Promise<TokenSet>;
  /** The user revokes the app at the provider: every grant of `user`, with its tokens, is gone. */
  revokeGrants(user: string): Promise<number>;
  /**
   * Facebook Login's renewal, played on the same server: `GET /fb/oauth/access_token` with
   * grant_type=fb_exchange_token swaps a live token for a new one (with the client in the query,
   * as Facebook documents it); the protected resource accepts these tokens too. Seeds one.
   */
  issueFacebookToken(client: OAuthClient, user: string, ttlSeconds: number): string;
  /** `https://127.0.0.1:<port>/fb/oauth/access_token`. */
  readonly facebookTokenEndpoint: string;
  /** While down, the token and revocation endpoints answer 503 (a provider outage). */
  setDown(down: boolean): void;
  /** Holds each token-endpoint request this long before answering (widens a race window). */
  setTokenDelay(ms: number): void;
  /** Every grant at the token endpoint, in order. */
  readonly grants: readonly RecordedGrant[];
  /** Every request to the revocation endpoint, in order. */
  readonly revocations: readonly RecordedRevocation[];
  /** Every request to the protected resource, in order. */
  readonly resourceCalls: readonly RecordedResourceCall[];
  /**
   * Every distinct token and code value the provider issued, every client secret, and every PKCE
   * verifier a client presented: canaries for a leak sweep.
   */
  readonly issuedValues: ReadonlySet<string>;
  close(): Promise<void>;
}

export interface RegisterClientOptions {
  readonly redirectUris: readonly string[];
  /** RFC 6749 §2.3.1: secret in the body or in HTTP Basic. Default `client_secret_post`. */
  readonly tokenEndpointAuthMethod?: "client_secret_post" | "client_secret_basic";
}

export interface OAuthClient {
  readonly clientId: string;
  readonly clientSecret: string;
}

export interface TokenSet {
  readonly access_token: string;
  readonly refresh_token?: string;
  readonly expires_in: number;
  readonly scope?: string;
  readonly token_type: string;
}

export interface RecordedGrant {
  readonly grantType: string;
  /** `undefined` when the grant succeeded; else the OAuth error code (`invalid_grant`...). */
  readonly error: string | undefined;
  readonly clientId: string | undefined;
}

export interface RecordedRevocation {
  /** What the client said it revoked (`refresh_token`, `access_token`), if it said. */
  readonly tokenTypeHint: string | undefined;
  /** What the presented value was at the provider, if it knew it (a live token is revoked). */
  readonly kind: "AccessToken" | "RefreshToken" | undefined;
  readonly status: number;
}

export interface RecordedResourceCall {
  /** 200 for a live access token, 401 for none, an unknown, an expired or a revoked one. */
  readonly status: number;
  readonly user: string | undefined;
}

export interface OAuthThirdPartyOptions {
  /** Access-token lifetime in seconds (default 5): short, so a test can wait for expiry. */
  readonly accessTokenTtlSeconds?: number;
  /** Lifetime of the tokens the Facebook-style exchange issues (default one hour). */
  readonly facebookTokenTtlSeconds?: number;
  /** Refresh-token lifetime in seconds (default one day). */
  readonly refreshTokenTtlSeconds?: number;
  readonly scopes?: readonly string[];
  /** Reuse a certificate (e.g. the test upstream's, so the broker trusts one CA for both). */
  readonly certificates?: TestCertificates;
}

// A login is a handful of requests; a loop that does not end here has gone wrong.
const MAX_STEPS = 12;
const DEFAULT_SCOPES = ["profile:read", "files:read", "files:write"];

export async function startOAuthThirdParty(options: OAuthThirdPartyOptions = {}): Promise<OAuthThirdParty> {
  const scopes = options.scopes ?? DEFAULT_SCOPES;
  const certificates = options.certificates ?? createTestCertificates();
  const agent = new Agent({ connect: { ca: certificates.ca } });
  const trusted = (url: string | URL, init: RequestInit = {}) => fetch(url, { ...init, dispatcher: agent });
  const storage = createMemoryStorage();
  const grants: RecordedGrant[] = [];
  const revocations: RecordedRevocation[] = [];
  const resourceCalls: RecordedResourceCall[] = [];
  const issuedValues = new Set<string>();
  let down = false;
  let tokenDelayMs = 0;

  const server = createServer({ key: certificates.key, cert: certificates.cert }, (req, res) => {
    void route(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const issuer = `https://127.0.0.1:${port}`;

  const provider = new Provider(issuer, {
    adapter: storage.adapterFor,
    // Its own key (the quick-start keys print a warning): ID tokens are signed, never checked here.
    jwks: {
      keys: [
        {
          ...generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ format: "jwk" }),
          use: "sig",
          alg: "ES256",
        },
      ],
    },
    clientDefaults: { id_token_signed_response_alg: "ES256" },
    clients: [],
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    scopes: ["openid", ...scopes],
    claims: { openid: ["sub"] },
    ttl: {
      AccessToken: options.accessTokenTtlSeconds ?? 5,
      AuthorizationCode: 60,
      RefreshToken: options.refreshTokenTtlSeconds ?? 86_400,
      Grant: 86_400,
      Interaction: 600,
      Session: 3_600,
      IdToken: 3_600,
    },
    findAccount: (_ctx: unknown, sub: string) => ({ accountId: sub, claims: () => ({ sub }) }),
    interactions: {
      url: (_ctx: unknown, interaction: { uid: string }) => `/interaction/${interaction.uid}`,
    },
    // PKCE on every authorization, confidential client or not (S256 is the only method v9 has).
    pkce: { required: () => true },
    // Like Google with access_type=offline: every code grant to a client allowed to refresh gets
    // a refresh token, without the OIDC `offline_access` scope and its forced consent prompt.
    issueRefreshToken: (_ctx: unknown, client: { grantTypeAllowed(type: string): boolean }) =>
      client.grantTypeAllowed("refresh_token"),
    // Every refresh rotates: the old refresh token is consumed, and presenting it again revokes
    // the grant (oidc-provider's reuse detection), so two refreshes racing would show.
    rotateRefreshToken: true,
    features: {
      devInteractions: { enabled: false },
      revocation: {
        enabled: true,
        // An app may revoke only what was issued to it.
        allowedPolicy: (_ctx: unknown, client: { clientId: string }, token: { clientId?: string }) =>
          token.clientId === client.clientId,
      },
    },
  });
  // Quiet the provider's warnings about its development defaults; errors still surface as HTTP.
  provider.on("server_error", () => undefined);
  provider.on("grant.success", (ctx: unknown) => {
    const oidc = oidcOf(ctx);
    grants.push({
      grantType: oidc.params.grant_type ?? "",
      error: undefined,
      clientId: oidc.client?.clientId,
    });
  });
  provider.on("grant.error", (ctx: unknown, err: unknown) => {
    const oidc = oidcOf(ctx);
    grants.push({
      grantType: oidc.params.grant_type ?? "",
      error: (err as { error?: string }).error ?? "server_error",
      clientId: oidc.client?.clientId,
    });
  });
  const callback = provider.callback();

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? "/", issuer).pathname;
    try {
      if (path.startsWith("/interaction/")) return await interact(req, res, path);
      if (path.startsWith("/api/")) return await serveResource(req, res);
      if (path === "/fb/oauth/access_token") {
        if (down) {
          res.writeHead(503, { "content-type": "text/plain" }).end("temporarily unavailable");
          return;
        }
        if (tokenDelayMs > 0) await new Promise((r) => setTimeout(r, tokenDelayMs));
        return exchangeFacebookToken(req, res);
      }
      if (path === "/token" || path === "/token/revocation") {
        if (down) {
          res.writeHead(503, { "content-type": "text/plain" }).end("temporarily unavailable");
          return;
        }
        if (path === "/token" && tokenDelayMs > 0) await new Promise((r) => setTimeout(r, tokenDelayMs));
        // Read the form here, to hold each app to its registered authentication method and to
        // record what was revoked; the provider takes the already-parsed body (its fallback for
        // a body another middleware read).
        const form = await readText(req);
        (req as IncomingMessage & { body?: string }).body = form;
        const params = new URLSearchParams(form);
        if (!authenticatesAsRegistered(req, params)) {
          res
            .writeHead(401, { "content-type": "application/json" })
            .end(JSON.stringify({ error: "invalid_client" }));
          return;
        }
        // What a client proves a code with is a secret of the client too: a canary for sweeps.
        const verifier = params.get("code_verifier");
        if (verifier !== null && verifier.length >= 8) issuedValues.add(verifier);
        if (path === "/token/revocation") {
          const kind = storage.kindOf(params.get("token") ?? "");
          const tokenTypeHint = params.get("token_type_hint") ?? undefined;
          res.on("finish", () => revocations.push({ tokenTypeHint, kind, status: res.statusCode }));
        }
      }
      callback(req, res);
    } catch (err) {
      if (!res.headersSent) res.writeHead(500, { "content-type": "text/plain" }).end(String(err));
    }
  }

  // oidc-provider accepts a client secret in the body or in Basic whichever the app registered;
  // real providers differ (GitHub takes either, some only one), so this one holds each app to its
  // registered method, and a broker sending the secret the other way fails as it would there.
  function authenticatesAsRegistered(req: IncomingMessage, params: URLSearchParams): boolean {
    const basic = req.headers.authorization?.startsWith("Basic ") === true;
    const clientId = basic
      ? decodeURIComponent(
          Buffer.from(req.headers.authorization?.slice(6) ?? "", "base64")
            .toString("utf8")
            .split(":")[0] ?? "",
        )
      : (params.get("client_id") ?? "");
    const registered = storage.clientMethod(clientId);
    if (registered === undefined) return true; // unknown client: the provider answers invalid_client
    return basic ? registered === "client_secret_basic" : registered === "client_secret_post";
  }

  /** The login and consent "pages": plain HTML forms a headless browser can post. */
  async function interact(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const [, , uid, action] = path.split("/");
    const details = await provider.interactionDetails(req, res);
    if (details.uid !== uid) {
      res.writeHead(400).end("interaction mismatch");
      return;
    }
    if (req.method === "GET") {
      const prompt = details.prompt.name;
      const form =
        prompt === "login"
          ? `<form data-prompt="login" method="post" action="/interaction/${uid}/login"><input name="login"></form>`
          : `<form data-prompt="consent" method="post" action="/interaction/${uid}/confirm"></form>` +
            `<form data-prompt="deny" method="post" action="/interaction/${uid}/abort"></form>`;
      res.writeHead(200, { "content-type": "text/html" }).end(`<!doctype html><body>${form}</body>`);
      return;
    }
    const body = new URLSearchParams(await readText(req));
    if (action === "login") {
      const login = body.get("login");
      if (login === null || login === "") {
        res.writeHead(400).end("login required");
        return;
      }
      await provider.interactionFinished(
        req,
        res,
        { login: { accountId: login } },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    if (action === "abort") {
      await provider.interactionFinished(
        req,
        res,
        { error: "access_denied", error_description: "End-User aborted interaction" },
        { mergeWithLastSubmission: false },
      );
      return;
    }
    if (action === "confirm") {
      const grant = await consentGrant(details as unknown as ConsentDetails);
      await provider.interactionFinished(
        req,
        res,
        { consent: { grantId: grant } },
        { mergeWithLastSubmission: true },
      );
      return;
    }
    res.writeHead(404).end();
  }

  /** The user grants what the client asked for (the missing scopes the prompt lists). */
  async function consentGrant(details: ConsentDetails): Promise<string> {
    const models = provider as unknown as ProviderModels;
    const existing = details.grantId === undefined ? undefined : await models.Grant.find(details.grantId);
    const grant =
      existing ??
      new models.Grant({
        accountId: details.session?.accountId ?? "",
        clientId: String(details.params.client_id),
      });
    const missing = details.prompt.details;
    if (missing.missingOIDCScope !== undefined) grant.addOIDCScope(missing.missingOIDCScope.join(" "));
    if (missing.missingOIDCClaims !== undefined) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [resource, resourceScopes] of Object.entries(missing.missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, resourceScopes.join(" "));
    }
    return grant.save();
  }

  const facebookTokens = new Map<string, { user: string; clientId: string; expiresAt: number }>();
  const facebookTtl = options.facebookTokenTtlSeconds ?? 3_600;

  function issueFacebookToken(client: OAuthClient, user: string, ttlSeconds: number): string {
    const value = `EAAfb${randomBytes(24).toString("base64url")}`;
    facebookTokens.set(value, { user, clientId: client.clientId, expiresAt: Date.now() + ttlSeconds * 1000 });
    issuedValues.add(value);
    return value;
  }

  /** Facebook's answers: a new token for a live one, its OAuthException (code 190) otherwise. */
  function exchangeFacebookToken(req: IncomingMessage, res: ServerResponse): void {
    const query = new URL(req.url ?? "/", issuer).searchParams;
    const clientId = query.get("client_id") ?? "";
    const registered = storage.clientSecret(clientId);
    const presented = facebookTokens.get(query.get("fb_exchange_token") ?? "");
    const live =
      query.get("grant_type") === "fb_exchange_token" &&
      registered !== undefined &&
      registered === query.get("client_secret") &&
      presented !== undefined &&
      presented.clientId === clientId &&
      presented.expiresAt > Date.now();
    if (!live) {
      grants.push({ grantType: "fb_exchange_token", error: "OAuthException", clientId });
      res.writeHead(400, { "content-type": "application/json" }).end(
        JSON.stringify({
          error: { message: "Error validating access token", type: "OAuthException", code: 190 },
        }),
      );
      return;
    }
    grants.push({ grantType: "fb_exchange_token", error: undefined, clientId });
    const value = issueFacebookToken({ clientId, clientSecret: "" }, presented.user, facebookTtl);
    res
      .writeHead(200, { "content-type": "application/json" })
      .end(JSON.stringify({ access_token: value, token_type: "bearer", expires_in: facebookTtl }));
  }

  /** The protected API: answers only to a live access token, and never echoes it. */
  async function serveResource(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const header = req.headers.authorization ?? "";
    const value = header.startsWith("Bearer ") ? header.slice("Bearer ".length) : "";
    const models = provider as unknown as ProviderModels;
    const facebook = facebookTokens.get(value);
    const token =
      facebook !== undefined
        ? { accountId: facebook.user, scope: "public_profile", isExpired: facebook.expiresAt <= Date.now() }
        : value === ""
          ? undefined
          : await models.AccessToken.find(value);
    if (token === undefined || token.isExpired) {
      resourceCalls.push({ status: 401, user: undefined });
      res
        .writeHead(401, {
          "content-type": "application/json",
          "www-authenticate": 'Bearer error="invalid_token"',
        })
        .end(JSON.stringify({ error: "invalid_token" }));
      return;
    }
    resourceCalls.push({ status: 200, user: token.accountId });
    res
      .writeHead(200, { "content-type": "application/json" })
      .end(JSON.stringify({ user: token.accountId, scope: token.scope ?? "" }));
  }

  storage.onIssue((value) => issuedValues.add(value));

  return {
    issuer,
    ca: certificates.ca,
    port,
    authorizationEndpoint: `${issuer}/auth`,
    tokenEndpoint: `${issuer}/token`,
    revocationEndpoint: `${issuer}/token/revocation`,
    resourceUrl: `${issuer}/api/me`,
    facebookTokenEndpoint: `${issuer}/fb/oauth/access_token`,
    issueFacebookToken,
    scopes,
    registerClient(registration) {
      const client = {
        clientId: `app-${randomBytes(6).toString("hex")}`,
        clientSecret: randomBytes(24).toString("base64url"),
      };
      storage.put("Client", client.clientId, {
        client_id: client.clientId,
        client_secret: client.clientSecret,
        redirect_uris: [...registration.redirectUris],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: registration.tokenEndpointAuthMethod ?? "client_secret_post",
        scope: ["openid", ...scopes].join(" "),
      });
      issuedValues.add(client.clientSecret);
      return client;
    },
    async authorize(authorizationUrl, { user, consent = "grant" }) {
      const browser = cookieJar(trusted);
      let response = await browser.fetch(authorizationUrl);
      for (let step = 0; step < MAX_STEPS; step++) {
        const location = response.headers.get("location");
        if (location !== null) {
          const next = new URL(location, issuer);
          // The provider is done: this redirect goes back to the client.
          if (next.origin !== issuer) return next;
          response = await browser.fetch(next.href);
          continue;
        }
        if (response.status !== 200) {
          throw new Error(`authorization stopped at ${response.status}: ${await response.text()}`);
        }
        const page = await response.text();
        const form = (prompt: string) =>
          new RegExp(`data-prompt="${prompt}" method="post" action="([^"]+)"`).exec(page)?.[1];
        const login = form("login");
        const confirm = form(consent === "grant" ? "consent" : "deny");
        const action = login ?? confirm;
        if (action === undefined) throw new Error(`no form on the provider's page: ${page.slice(0, 200)}`);
        response = await browser.fetch(new URL(action, issuer).href, {
          method: "POST",
          headers: { "content-type": "application/x-www-form-urlencoded" },
          body: login === undefined ? "" : new URLSearchParams({ login: user }).toString(),
        });
      }
      throw new Error("the authorization did not come back to the client");
    },
    async exchangeCode(client, code, redirectUri, verifier) {
      const response = await trusted(`${issuer}/token`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({
          grant_type: "authorization_code",
          code,
          redirect_uri: redirectUri,
          code_verifier: verifier,
          client_id: client.clientId,
          client_secret: client.clientSecret,
        }),
      });
      const body = (await response.json()) as TokenSet & { error?: string };
      if (!response.ok) throw new Error(`code exchange refused: ${body.error}`);
      return body;
    },
    async revokeGrants(user) {
      let revoked = storage.revokeAccount(user);
      for (const [value, token] of facebookTokens) {
        if (token.user === user) {
          facebookTokens.delete(value);
          revoked += 1;
        }
      }
      return revoked;
    },
    setDown(value) {
      down = value;
    },
    setTokenDelay(ms) {
      tokenDelayMs = ms;
    },
    grants,
    revocations,
    resourceCalls,
    issuedValues,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await agent.close();
    },
  };
}

interface ConsentDetails {
  readonly grantId?: string;
  readonly session?: { readonly accountId: string };
  readonly params: Readonly<Record<string, unknown>>;
  readonly prompt: {
    readonly details: {
      readonly missingOIDCScope?: string[];
      readonly missingOIDCClaims?: string[];
      readonly missingResourceScopes?: Record<string, string[]>;
    };
  };
}

interface GrantModel {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(resource: string, scope: string): void;
  save(): Promise<string>;
}

/** The parts of oidc-provider's models this module uses (it ships no type declarations). */
interface ProviderModels {
  readonly Grant: {
    new (properties: { accountId: string; clientId: string }): GrantModel;
    find(id: string): Promise<GrantModel | undefined>;
  };
  readonly AccessToken: {
    find(
      value: string,
    ): Promise<
      { readonly accountId: string; readonly scope?: string; readonly isExpired: boolean } | undefined
    >;
  };
}

interface OidcContext {
  readonly params: { readonly grant_type?: string };
  readonly client?: { readonly clientId: string };
}

function oidcOf(ctx: unknown): OidcContext {
  return (ctx as { oidc: OidcContext }).oidc;
}

async function readText(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

type Payload = Record<string, unknown> & { grantId?: string; accountId?: string; consumed?: number };

/**
 * oidc-provider's storage, in memory, with what its built-in adapter lacks for tests: clients
 * registered at run time, every issued value observed, and a user's grants revoked at once.
 */
function createMemoryStorage() {
  const models = new Map<string, Map<string, Payload>>();
  const listeners: Array<(value: string) => void> = [];
  const table = (name: string) => {
    let found = models.get(name);
    if (found === undefined) {
      found = new Map();
      models.set(name, found);
    }
    return found;
  };
  // Token and code ids are the values a client holds (opaque format): every one is a canary.
  const ISSUED = new Set(["AccessToken", "RefreshToken", "AuthorizationCode"]);

  class MemoryAdapter {
    readonly #name: string;
    constructor(name: string) {
      this.#name = name;
    }
    async upsert(id: string, payload: Payload): Promise<void> {
      table(this.#name).set(id, payload);
      if (ISSUED.has(this.#name)) for (const listen of listeners) listen(id);
    }
    async find(id: string): Promise<Payload | undefined> {
      return table(this.#name).get(id);
    }
    async findByUid(uid: string): Promise<Payload | undefined> {
      for (const payload of table(this.#name).values()) if (payload.uid === uid) return payload;
      return undefined;
    }
    async findByUserCode(): Promise<undefined> {
      return undefined;
    }
    async consume(id: string): Promise<void> {
      const payload = table(this.#name).get(id);
      if (payload !== undefined) payload.consumed = Math.floor(Date.now() / 1000);
    }
    async destroy(id: string): Promise<void> {
      table(this.#name).delete(id);
    }
    async revokeByGrantId(grantId: string): Promise<void> {
      const rows = table(this.#name);
      for (const [id, payload] of rows) if (payload.grantId === grantId) rows.delete(id);
    }
  }

  return {
    adapterFor: MemoryAdapter,
    put(model: string, id: string, payload: Payload): void {
      table(model).set(id, payload);
    },
    clientSecret(clientId: string): string | undefined {
      const secret = table("Client").get(clientId)?.client_secret;
      return typeof secret === "string" ? secret : undefined;
    },
    clientMethod(clientId: string): string | undefined {
      const method = table("Client").get(clientId)?.token_endpoint_auth_method;
      return typeof method === "string" ? method : undefined;
    },
    kindOf(value: string): "AccessToken" | "RefreshToken" | undefined {
      if (table("AccessToken").has(value)) return "AccessToken";
      if (table("RefreshToken").has(value)) return "RefreshToken";
      return undefined;
    },
    onIssue(listen: (value: string) => void): void {
      listeners.push(listen);
    },
    /** Deletes every grant of `accountId` and every token and code issued under them. */
    revokeAccount(accountId: string): number {
      const grantIds = [...table("Grant")].filter(([, g]) => g.accountId === accountId).map(([id]) => id);
      for (const grantId of grantIds) {
        table("Grant").delete(grantId);
        for (const model of ISSUED) {
          const rows = table(model);
          for (const [id, payload] of rows) if (payload.grantId === grantId) rows.delete(id);
        }
      }
      return grantIds.length;
    },
  };
}

/** A browser's cookies for one origin: enough for the provider's session and interaction cookies. */
function cookieJar(send: (url: string, init?: RequestInit) => Promise<Response>): {
  fetch(url: string, init?: RequestInit): Promise<Response>;
} {
  const cookies = new Map<string, string>();
  return {
    async fetch(url, init = {}) {
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

/**
 * A provider registry entry for this third party, as an operator would write one for Google:
 * calls go to `/api/**` with the access token as a bearer token, OAuth endpoints are its own.
 * Loopback is allowed only outside production (KEYBROKER_ALLOW_LOOPBACK_PROVIDERS).
 */
export function thirdPartyProviderDefinition(
  party: Pick<OAuthThirdParty, "issuer" | "scopes" | "port">,
  options: {
    readonly id: string;
    /** Refresh a token this many seconds before it expires (default 1). */
    readonly marginSeconds?: number;
    /** Whether the registry names the revocation endpoint (default true). */
    readonly revocation?: boolean;
    readonly tokenAuthMethod?: "client_secret_post" | "client_secret_basic";
    /** Facebook Login's shape: no refresh tokens, renewal by fb_exchange_token. */
    readonly facebook?: boolean;
  },
): unknown {
  const facebook = options.facebook === true;
  return {
    id: options.id,
    displayName: `test ${options.id}`,
    baseUrl: `${party.issuer}/api`,
    allowedHosts: ["127.0.0.1"],
    allowedMethods: ["GET", "POST"],
    pathPatterns: ["/**"],
    requiredFields: ["access_token"],
    auth: { type: "bearer", field: "access_token" },
    timeoutMs: 5_000,
    maxResponseBytes: 1024 * 1024,
    allowLoopback: true,
    operations: [
      { class: "read", methods: ["GET", "HEAD"], paths: ["/**"] },
      { class: "write", methods: ["POST"], paths: ["/**"] },
    ],
    defaultGrant: ["read", "write"],
    oauth: {
      authorizationEndpoint: `${party.issuer}/auth`,
      tokenEndpoint: facebook ? `${party.issuer}/fb/oauth/access_token` : `${party.issuer}/token`,
      ...(options.revocation === false || facebook
        ? {}
        : { revocationEndpoint: `${party.issuer}/token/revocation` }),
      scopes: [...party.scopes],
      scopeSeparator: facebook ? "," : " ",
      pkce: "S256",
      tokenAuthMethod: options.tokenAuthMethod ?? "client_secret_post",
      refresh: facebook
        ? { refreshTokens: false, rotation: false, marginSeconds: options.marginSeconds ?? 1 }
        : { refreshTokens: true, rotation: true, marginSeconds: options.marginSeconds ?? 1 },
      ...(facebook ? { longLivedExchange: "facebook" } : {}),
    },
  };
}
