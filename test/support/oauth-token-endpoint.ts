import { createHash, randomBytes } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { createTestCertificates, type TestCertificates } from "./https-upstream.js";

/**
 * A small real HTTPS authorization server for unit- and integration-level OAuth tests: it issues
 * codes bound to a PKCE challenge and a client, exchanges them (checking the verifier, the
 * client secret and the redirect URI), refreshes with rotation, does Facebook's long-lived
 * exchange and RFC 7009 revocation. Every issued value is random per run (a leak is
 * unambiguous), and every request is recorded.
 */
export interface TestAuthorizationServer {
  readonly port: number;
  readonly certs: TestCertificates;
  readonly clientId: string;
  readonly clientSecret: string;
  /** Every access token, refresh token and code issued so far. */
  readonly issued: { accessTokens: string[]; refreshTokens: string[]; codes: string[] };
  readonly requests: Array<{ path: string; form: URLSearchParams; authorization: string | undefined }>;
  /** What the user "consents" to: a code for this challenge, as the browser would bring back. */
  issueCode(input: { challenge: string; redirectUri: string; scope?: string }): string;
  /** The next answer of /token is this (status, JSON body) instead of the real one. */
  failNext(status: number, body: Record<string, unknown>): void;
  /** Lifetime of issued access tokens; undefined: no expires_in. */
  accessTokenLifetime: number | undefined;
  tokenType: string;
  close(): Promise<void>;
}

export async function startTestAuthorizationServer(): Promise<TestAuthorizationServer> {
  const certs = createTestCertificates();
  const random = (label: string): string => `oauth${label}${randomBytes(16).toString("hex")}`;
  const codes = new Map<string, { challenge: string; redirectUri: string; scope: string | undefined }>();
  const refreshTokens = new Set<string>();
  let failure: { status: number; body: Record<string, unknown> } | undefined;
  const sockets = new Set<Socket>();

  const state: TestAuthorizationServer = {
    port: 0,
    certs,
    clientId: random("client"),
    clientSecret: random("clientsecret"),
    issued: { accessTokens: [], refreshTokens: [], codes: [] },
    requests: [],
    accessTokenLifetime: 3600,
    tokenType: "Bearer",
    issueCode({ challenge, redirectUri, scope }) {
      const code = random("code");
      codes.set(code, { challenge, redirectUri, scope });
      state.issued.codes.push(code);
      return code;
    },
    failNext(status, body) {
      failure = { status, body };
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };

  const tokens = (scope: string | undefined, withRefresh: boolean): Record<string, unknown> => {
    const access = random("access");
    state.issued.accessTokens.push(access);
    const body: Record<string, unknown> = { access_token: access, token_type: state.tokenType };
    if (state.accessTokenLifetime !== undefined) body.expires_in = state.accessTokenLifetime;
    if (scope !== undefined) body.scope = scope;
    if (withRefresh) {
      const refresh = random("refresh");
      refreshTokens.add(refresh);
      state.issued.refreshTokens.push(refresh);
      body.refresh_token = refresh;
    }
    return body;
  };

  const clientOk = (req: IncomingMessage, form: URLSearchParams): boolean => {
    const auth = req.headers.authorization;
    if (auth?.startsWith("Basic ")) {
      const [id, secret] = Buffer.from(auth.slice(6), "base64").toString("latin1").split(":");
      return (
        decodeURIComponent(id ?? "") === state.clientId &&
        decodeURIComponent(secret ?? "") === state.clientSecret
      );
    }
    return form.get("client_id") === state.clientId && form.get("client_secret") === state.clientSecret;
  };

  const answer = (
    req: IncomingMessage,
    form: URLSearchParams,
  ): { status: number; body: Record<string, unknown> } => {
    if (failure !== undefined) {
      const f = failure;
      failure = undefined;
      return f;
    }
    if (!clientOk(req, form)) return { status: 401, body: { error: "invalid_client" } };
    const path = (req.url ?? "").split("?", 1)[0];
    if (path === "/revoke") {
      refreshTokens.delete(form.get("token") ?? "");
      return { status: 200, body: {} };
    }
    switch (form.get("grant_type")) {
      case "authorization_code": {
        const code = form.get("code") ?? "";
        const issued = codes.get(code);
        codes.delete(code); // single use
        const verifier = form.get("code_verifier") ?? "";
        const challenge = createHash("sha256").update(verifier, "ascii").digest("base64url");
        if (
          issued === undefined ||
          issued.challenge !== challenge ||
          issued.redirectUri !== form.get("redirect_uri")
        ) {
          return {
            status: 400,
            body: { error: "invalid_grant", error_description: "provider text: code is bad" },
          };
        }
        return { status: 200, body: tokens(issued.scope, true) };
      }
      case "refresh_token": {
        const old = form.get("refresh_token") ?? "";
        if (!refreshTokens.delete(old)) return { status: 400, body: { error: "invalid_grant" } };
        return { status: 200, body: tokens(undefined, true) };
      }
      case "fb_exchange_token": {
        if (!state.issued.accessTokens.includes(form.get("fb_exchange_token") ?? "")) {
          return { status: 400, body: { error: { message: "provider text", type: "OAuthException" } } };
        }
        return { status: 200, body: { ...tokens(undefined, false), expires_in: 5_184_000 } };
      }
      default:
        return { status: 400, body: { error: "unsupported_grant_type" } };
    }
  };

  const server: Server = createServer({ key: certs.key, cert: certs.cert }, (req, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "https://127.0.0.1");
      const form = new URLSearchParams(Buffer.concat(chunks).toString("latin1"));
      // Facebook's exchange is a GET with its parameters in the query.
      for (const [k, v] of url.searchParams) form.append(k, v);
      state.requests.push({ path: url.pathname, form, authorization: req.headers.authorization });
      const { status, body } = answer(req, form);
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    });
  });
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  (state as { port: number }).port = (server.address() as AddressInfo).port;
  return state;
}

/** A registry entry with an `oauth` block pointing at the test authorization server. */
export function oauthTestProvider(
  id: string,
  port: number,
  overrides: Record<string, unknown> = {},
): Record<string, unknown> {
  const base = `https://127.0.0.1:${port}`;
  return {
    id,
    displayName: `test oauth ${id}`,
    baseUrl: `${base}/api`,
    allowedHosts: ["127.0.0.1"],
    allowedMethods: ["GET", "POST"],
    pathPatterns: ["/**"],
    requiredFields: ["access_token"],
    auth: { type: "bearer", field: "access_token" },
    timeoutMs: 3000,
    maxResponseBytes: 1024 * 1024,
    allowLoopback: true,
    operations: [{ class: "read", methods: ["GET"], paths: ["/**"] }],
    defaultGrant: ["read"],
    oauth: {
      authorizationEndpoint: `${base}/authorize`,
      tokenEndpoint: `${base}/token`,
      revocationEndpoint: `${base}/revoke`,
      scopes: ["read", "write", "profile"],
      scopeSeparator: " ",
      pkce: "S256",
      tokenAuthMethod: "client_secret_post",
      refresh: { refreshTokens: true, rotation: true, marginSeconds: 60 },
      ...overrides,
    },
  };
}
