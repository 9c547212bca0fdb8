import { Pool } from "undici";
import { BrokerError, isBrokerError } from "../errors.js";
import type { Logger } from "../log/logger.js";
import {
  createGuardedConnector,
  type Dialer,
  type Resolver,
  systemResolver,
} from "../outbound/guarded-connector.js";
import type { OAuthSettings } from "../outbound/oauth-schema.js";
import type { Provider } from "../outbound/provider-registry.js";
import type { OAuthAppCredentials } from "./oauth-app-store.js";
import { isTokenEndpointError, ProviderError, ProviderUnavailable } from "./token-endpoint-errors.js";
import { parseTokenResponse, type TokenSet, tokenErrorOf } from "./token-response.js";

export type { TokenSet } from "./token-response.js";

/** Talks to providers' token and revocation endpoints (RFC 6749 §4.1.3, §6; RFC 7009; Facebook). */
export interface TokenEndpointClient {
  /** Authorization code → tokens, proving the PKCE verifier (RFC 7636 §4.5). */
  exchangeCode(input: {
    readonly provider: Provider;
    readonly app: OAuthAppCredentials;
    readonly code: string;
    readonly codeVerifier: Buffer;
    readonly redirectUri: string;
    readonly signal: AbortSignal;
  }): Promise<TokenSet>;
  /** refresh_token grant. With rotation the answer may carry a new refresh token (keep the old one if not). */
  refresh(input: {
    readonly provider: Provider;
    readonly app: OAuthAppCredentials;
    readonly refreshToken: Buffer;
    readonly signal: AbortSignal;
  }): Promise<TokenSet>;
  /** Facebook: a short- or long-lived user token → a long-lived one (grant_type=fb_exchange_token). */
  exchangeLongLived(input: {
    readonly provider: Provider;
    readonly app: OAuthAppCredentials;
    readonly accessToken: Buffer;
    readonly signal: AbortSignal;
  }): Promise<TokenSet>;
  /**
   * RFC 7009 revocation. Resolves "revoked" (HTTP 200, which RFC 7009 also answers for a token
   * already invalid) or "unsupported" when the provider has no revocation endpoint; throws a
   * TokenEndpointError otherwise.
   */
  revoke(input: {
    readonly provider: Provider;
    readonly app: OAuthAppCredentials;
    readonly token: Buffer;
    readonly tokenTypeHint: "access_token" | "refresh_token";
    readonly signal: AbortSignal;
  }): Promise<"revoked" | "unsupported">;
  close(): Promise<void>;
}

export interface TokenEndpointClientDeps {
  readonly logger: Logger;
  readonly resolve?: Resolver;
  /** Extra trusted CA (a test provider with a throwaway certificate). */
  readonly ca?: string | Buffer;
  readonly dial?: Dialer;
}

const MAX_RESPONSE_BYTES = 64 * 1024;
const MAX_TIMEOUT_MS = 30_000;
const USER_AGENT = "keybroker/0.1";

interface EndpointRequest {
  readonly provider: Provider;
  readonly endpoint: string;
  readonly method: "GET" | "POST";
  readonly params: URLSearchParams;
  readonly app: OAuthAppCredentials;
  /** Facebook's exchange sends the client in the query, as its documentation shows. */
  readonly clientInQuery?: boolean;
  readonly signal: AbortSignal;
  readonly what: "code" | "refresh" | "long_lived" | "revoke";
}

export function createTokenEndpointClient(deps: TokenEndpointClientDeps): TokenEndpointClient {
  const logger = deps.logger.child({ component: "oauth-token-endpoint" });
  const resolve = deps.resolve ?? systemResolver;
  const pools = new Map<string, Pool>();
  let closed = false;

  // One pool per provider and endpoint origin, its connector the same SSRF guard as calls: the
  // endpoint's host only (the registry checked it is in allowedHosts), resolved once, checked,
  // dialled by address, TLS verified against the name.
  const poolFor = (provider: Provider, url: URL): Pool => {
    const key = `${provider.definition.id} ${url.origin}`;
    let pool = pools.get(key);
    if (pool === undefined) {
      const timeoutMs = Math.min(provider.definition.timeoutMs, MAX_TIMEOUT_MS);
      pool = new Pool(url.origin, {
        connect: createGuardedConnector({
          allowedHosts: [url.hostname],
          allowLoopback: provider.definition.allowLoopback === true,
          resolve,
          ...(deps.ca === undefined ? {} : { ca: deps.ca }),
          ...(deps.dial === undefined ? {} : { dial: deps.dial }),
          connectTimeoutMs: Math.min(timeoutMs, 10_000),
        }),
        connections: 4,
        keepAliveTimeout: 10_000,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      pools.set(key, pool);
    }
    return pool;
  };

  async function send(req: EndpointRequest): Promise<{ status: number; body: Buffer }> {
    if (closed) throw new ProviderUnavailable({ cause: new Error("token endpoint client is closed") });
    const url = new URL(req.endpoint);
    const headers: Record<string, string> = { accept: "application/json", "user-agent": USER_AGENT };
    const params = new URLSearchParams(req.params);
    const secret = req.app.clientSecret.toString("latin1");
    if (
      req.provider.definition.oauth?.tokenAuthMethod === "client_secret_basic" &&
      req.clientInQuery !== true
    ) {
      // RFC 6749 §2.3.1: both parts form-urlencoded before the Basic encoding.
      const pair = `${formEncode(req.app.clientId)}:${formEncode(secret)}`;
      headers.authorization = `Basic ${Buffer.from(pair, "latin1").toString("base64")}`;
    } else {
      params.set("client_id", req.app.clientId);
      params.set("client_secret", secret);
    }
    let path = url.pathname;
    let body: Buffer | null = null;
    if (req.method === "GET") {
      path = `${url.pathname}?${params.toString()}`;
    } else {
      headers["content-type"] = "application/x-www-form-urlencoded";
      body = Buffer.from(params.toString(), "latin1");
    }
    const timeoutMs = Math.min(req.provider.definition.timeoutMs, MAX_TIMEOUT_MS);
    const signal = AbortSignal.any([req.signal, AbortSignal.timeout(timeoutMs)]);
    const began = performance.now();
    try {
      const res = await poolFor(req.provider, url).request({
        method: req.method,
        path,
        headers,
        body,
        signal,
      });
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > MAX_RESPONSE_BYTES) {
          res.body.destroy();
          throw new ProviderError({ cause: new Error("token endpoint answer is too large") });
        }
        chunks.push(chunk as Buffer);
      }
      // Logged: provider, what, status, time. Never the URL (its query may hold a secret), headers or body.
      logger.info(
        {
          provider: req.provider.definition.id,
          request: req.what,
          status: res.statusCode,
          durationMs: Math.round(performance.now() - began),
        },
        "token endpoint answered",
      );
      return { status: res.statusCode, body: Buffer.concat(chunks) };
    } catch (err) {
      throw toEndpointError(err);
    }
  }

  const oauthOf = (provider: Provider): OAuthSettings => {
    const oauth = provider.definition.oauth;
    if (oauth === undefined) throw new BrokerError("failed_precondition", "provider has no oauth settings");
    return oauth;
  };

  async function tokenRequest(req: EndpointRequest): Promise<TokenSet> {
    const oauth = oauthOf(req.provider);
    const { status, body } = await send(req);
    try {
      return parseTokenResponse(status, body, oauth);
    } catch (err) {
      logRefusal(req, err);
      throw err;
    } finally {
      body.fill(0);
    }
  }

  function logRefusal(req: EndpointRequest, err: unknown): void {
    if (!isTokenEndpointError(err)) return;
    logger.warn(
      {
        provider: req.provider.definition.id,
        request: req.what,
        failure: err.failure,
        oauthError: err.oauthError,
      },
      "token endpoint refused the request",
    );
  }

  return {
    exchangeCode({ provider, app, code, codeVerifier, redirectUri, signal }) {
      const oauth = oauthOf(provider);
      const params = new URLSearchParams({
        grant_type: "authorization_code",
        code,
        redirect_uri: redirectUri,
        code_verifier: codeVerifier.toString("latin1"),
      });
      return tokenRequest({
        provider,
        endpoint: oauth.tokenEndpoint,
        method: "POST",
        params,
        app,
        signal,
        what: "code",
      });
    },
    refresh({ provider, app, refreshToken, signal }) {
      const oauth = oauthOf(provider);
      const params = new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: refreshToken.toString("latin1"),
      });
      return tokenRequest({
        provider,
        endpoint: oauth.tokenEndpoint,
        method: "POST",
        params,
        app,
        signal,
        what: "refresh",
      });
    },
    exchangeLongLived({ provider, app, accessToken, signal }) {
      const oauth = oauthOf(provider);
      if (oauth.longLivedExchange !== "facebook") {
        throw new BrokerError("failed_precondition", "provider has no long-lived token exchange");
      }
      const params = new URLSearchParams({
        grant_type: "fb_exchange_token",
        fb_exchange_token: accessToken.toString("latin1"),
      });
      return tokenRequest({
        provider,
        endpoint: oauth.tokenEndpoint,
        method: "GET",
        params,
        app,
        clientInQuery: true,
        signal,
        what: "long_lived",
      });
    },
    async revoke({ provider, app, token, tokenTypeHint, signal }) {
      const oauth = oauthOf(provider);
      if (oauth.revocationEndpoint === undefined) return "unsupported";
      const params = new URLSearchParams({ token: token.toString("latin1"), token_type_hint: tokenTypeHint });
      const req: EndpointRequest = {
        provider,
        endpoint: oauth.revocationEndpoint,
        method: "POST",
        params,
        app,
        signal,
        what: "revoke",
      };
      const { status, body } = await send(req);
      try {
        if (status === 200) return "revoked";
        let doc: Record<string, unknown> = {};
        try {
          const parsed: unknown = JSON.parse(body.toString("utf8"));
          if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)) {
            doc = parsed as Record<string, unknown>;
          }
        } catch {
          // Not JSON: the status alone decides.
        }
        const err = tokenErrorOf(status, doc);
        logRefusal(req, err);
        throw err;
      } finally {
        body.fill(0);
      }
    },
    async close() {
      closed = true;
      const all = [...pools.values()];
      pools.clear();
      await Promise.all(all.map((p) => p.destroy()));
    },
  };
}

function formEncode(value: string): string {
  return new URLSearchParams({ v: value }).toString().slice(2);
}

/** Guard refusals are configuration (ProviderError); anything else on the way is unavailability. */
function toEndpointError(err: unknown): Error {
  if (isTokenEndpointError(err)) return err;
  if (isBrokerError(err) && err.code === "permission_denied") return new ProviderError({ cause: err });
  return new ProviderUnavailable({ cause: err });
}
