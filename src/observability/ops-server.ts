import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Logger } from "../log/logger.js";
import type { ReadinessReport } from "./readiness.js";

/** What /metrics serves: a prom-client Registry, or the cluster primary's aggregate of its workers'. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export interface OpsServerDeps {
  readonly metrics: { readonly registry: MetricsSource };
  readonly readiness: () => Promise<ReadinessReport>;
  readonly logger: Logger;
}

/** The operator's port: /metrics, /livez, /readyz. Separate from the API so it is never exposed with it. */
export interface OpsServer {
  /** Binds exactly `host` (port 0 picks one); resolves with the bound port. */
  listen(host: string, port: number): Promise<number>;
  /** Stops accepting and drops open connections (scrapers keep them alive). */
  close(): Promise<void>;
}

const TEXT = "text/plain; charset=utf-8";
const JSON_TYPE = "application/json; charset=utf-8";
const NOT_READY: ReadinessReport = { ready: false, reasons: ["readiness check failed"] };

/**
 * Plain node:http, unauthenticated by design, so it serves nothing secret: counters with
 * bounded labels and fixed readiness phrases (SPEC I7). Paths and query strings are never
 * logged: a probe URL is the one place a stray token could arrive on this port.
 */
export function createOpsServer(deps: OpsServerDeps): OpsServer {
  const { metrics, readiness } = deps;
  const logger = deps.logger.child({ component: "ops-server" });

  const server = createServer(
    // Probes and scrapers send tiny requests; small limits keep a stuck client from holding a socket.
    { requestTimeout: 5_000, headersTimeout: 5_000, keepAliveTimeout: 5_000, maxHeaderSize: 8 * 1024 },
    (req, res) => {
      answer(req, res).catch((err: unknown) => {
        logger.error({ err }, "ops request failed");
        if (!res.headersSent) send(res, 500, TEXT, "internal error\n");
        else res.destroy();
      });
    },
  );

  async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? "/").split("?", 1)[0];
    if (path !== "/metrics" && path !== "/livez" && path !== "/readyz") {
      send(res, 404, TEXT, "not found\n");
      return;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      res.setHeader("allow", "GET, HEAD");
      send(res, 405, TEXT, "method not allowed\n");
      return;
    }
    if (path === "/livez") {
      // Liveness is only "the event loop answers": a dependency outage must not restart the pod.
      send(res, 200, TEXT, "ok\n");
      return;
    }
    if (path === "/readyz") {
      const report = await readiness().catch((err: unknown) => {
        logger.warn({ err }, "readiness check threw");
        return NOT_READY;
      });
      const body = JSON.stringify({ ready: report.ready, reasons: report.reasons });
      send(res, report.ready ? 200 : 503, JSON_TYPE, `${body}\n`);
      return;
    }
    send(res, 200, metrics.registry.contentType, await metrics.registry.metrics());
  }

  return {
    listen(host, port) {
      return new Promise((resolve, reject) => {
        const onError = (err: Error): void => reject(err);
        server.once("error", onError);
        server.listen({ host, port, exclusive: true }, () => {
          server.off("error", onError);
          const bound = (server.address() as AddressInfo).port;
          logger.info({ host, port: bound }, "ops server listening");
          resolve(bound);
        });
      });
    },

    close() {
      return new Promise((resolve, reject) => {
        if (!server.listening) {
          resolve();
          return;
        }
        server.close((err) => (err === undefined ? resolve() : reject(err)));
        server.closeAllConnections();
      });
    },
  };
}

function send(res: ServerResponse, status: number, contentType: string, body: string): void {
  res.writeHead(status, {
    "content-type": contentType,
    "content-length": Buffer.byteLength(body),
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
  });
  res.end(res.req.method === "HEAD" ? undefined : body);
}
