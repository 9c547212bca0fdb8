import { randomUUID } from "node:crypto";
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Logger } from "../../log/logger.js";
import type { ServerTls } from "./tls-credentials.js";

/** The public path the provider sends the user's browser back to (the registered redirect URI). */
export const OAUTH_CALLBACK_PATH = "/oauth/callback";

/** What the connect flow answers for one callback (oauth/connect-flow.ts, structurally). */
export type CallbackAnswer =
  | { readonly kind: "redirect"; readonly location: string }
  | { readonly kind: "bad_request" };

export interface OAuthCallbackServerDeps {
  readonly complete: (
    query: { state: string | undefined; code: string | undefined; error: string | undefined },
    signal: AbortSignal,
  ) => Promise<CallbackAnswer>;
  /** HTTPS; undefined only outside production on loopback (config refuses it otherwise). */
  readonly tls: ServerTls | undefined;
  readonly logger: Logger;
  /** How long one callback may take (the code exchange included). */
  readonly timeoutMs?: number;
}

export interface OAuthCallbackServer {
  listen(host: string, port: number): Promise<number>;
  close(): Promise<void>;
}

const TEXT = "text/plain; charset=utf-8";
// The callback's answers are never cached, never framed and never leak where they came from
// (the code and state are in this request's URL).
const HEADERS = {
  "cache-control": "no-store",
  "referrer-policy": "no-referrer",
  "x-content-type-options": "nosniff",
  "x-frame-options": "DENY",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
};

/**
 * The one route of the public listener: GET /oauth/callback?code&state (RFC 6749 §4.1.2). A 303
 * to the main app's return URL with only a secret id or an error code; a plain 400 when the state
 * matches nothing. The URL is never logged: it carries the authorization code and the state.
 */
export function createOAuthCallbackServer(deps: OAuthCallbackServerDeps): OAuthCallbackServer {
  const logger = deps.logger.child({ component: "oauth-callback" });
  const timeoutMs = deps.timeoutMs ?? 30_000;
  const sockets = new Set<Socket>();
  const options = { requestTimeout: timeoutMs + 5_000, headersTimeout: 10_000, maxHeaderSize: 16 * 1024 };
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    answer(req, res).catch((err: unknown) => {
      logger.error({ err }, "oauth callback failed");
      if (!res.headersSent) send(res, 500, "internal error\n");
      else res.destroy();
    });
  };
  const server: Server =
    deps.tls === undefined
      ? createHttpServer(options, handler)
      : createHttpsServer(
          { ...options, cert: deps.tls.cert, key: deps.tls.key, minVersion: "TLSv1.2" },
          handler,
        );
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });

  async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "https://callback.invalid");
    if (url.pathname !== OAUTH_CALLBACK_PATH) {
      send(res, 404, "not found\n");
      return;
    }
    if (req.method !== "GET") {
      res.setHeader("allow", "GET");
      send(res, 405, "method not allowed\n");
      return;
    }
    const one = (name: string): string | undefined => {
      const all = url.searchParams.getAll(name);
      return all.length === 1 ? all[0] : undefined;
    };
    const signal = AbortSignal.timeout(timeoutMs);
    const outcome = await deps.complete(
      { state: one("state"), code: one("code"), error: one("error") },
      signal,
    );
    if (outcome.kind === "bad_request") {
      logger.info({ requestId: randomUUID() }, "oauth callback refused: no matching authorization");
      send(
        res,
        400,
        "This sign-in link is invalid, expired or was already used. Start again from the app.\n",
      );
      return;
    }
    res.writeHead(303, { ...HEADERS, location: outcome.location, "content-length": "0" });
    res.end();
  }

  return {
    listen: (host, port) =>
      new Promise((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => {
          server.off("error", reject);
          resolve((server.address() as AddressInfo).port);
        });
      }),
    async close() {
      for (const socket of sockets) socket.destroy();
      if (server.listening) await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function send(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { ...HEADERS, "content-type": TEXT, "content-length": Buffer.byteLength(text) });
  res.end(text);
}
