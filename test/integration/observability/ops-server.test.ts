import { readFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { afterEach, describe, expect, it } from "vitest";
import { createMetrics } from "../../../src/observability/metrics.js";
import { createOpsServer, type OpsServer } from "../../../src/observability/ops-server.js";
import { createReadiness, type ReadinessReport } from "../../../src/observability/readiness.js";
import { captureLogs } from "../../support/captured-logs.js";

const HOST = "127.0.0.1";
const servers: OpsServer[] = [];

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

function fetchOps(
  port: number,
  path: string,
  options: { method?: string; agent?: Agent } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: HOST, port, path, method: options.method ?? "GET", agent: options.agent ?? false },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString("utf8"),
          }),
        );
        res.on("error", reject);
      },
    );
    req.setTimeout(5_000, () => req.destroy(new Error("ops request timed out")));
    req.on("error", reject);
    req.end();
  });
}

async function start(readiness: () => Promise<ReadinessReport> = async () => ({ ready: true, reasons: [] })) {
  const metrics = createMetrics();
  const logs = captureLogs();
  const server = createOpsServer({ metrics, readiness, logger: logs.logger });
  servers.push(server);
  const port = await server.listen(HOST, 0);
  return { metrics, logs, server, port };
}

/** Local addresses of listening IPv4 sockets on `port`, from the kernel's own table. */
function listeningAddresses(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  return readFileSync("/proc/net/tcp", "utf8")
    .split("\n")
    .slice(1)
    .map((line) => line.trim().split(/\s+/))
    .filter((cols) => cols[3] === "0A" && cols[1]?.endsWith(`:${hexPort}`))
    .map((cols) => {
      const hex = (cols[1] ?? "").split(":")[0] ?? "";
      // Little-endian hex: 0100007F is 127.0.0.1.
      return [6, 4, 2, 0].map((i) => Number.parseInt(hex.slice(i, i + 2), 16)).join(".");
    });
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

describe("ops server", () => {
  it("answers /livez with 200 while the process runs, whatever readiness says", async () => {
    const { port } = await start(async () => ({ ready: false, reasons: ["migrations pending"] }));

    const reply = await fetchOps(port, "/livez");

    expect(reply.status).toBe(200);
    expect(reply.body).toBe("ok\n");
    expect(reply.headers["cache-control"]).toBe("no-store");
  });

  it("answers /readyz 503 with reasons until start-up completes, then 200, then 503 once shutting down", async () => {
    const readiness = createReadiness({
      parts: { migrations: "migrations pending", pepper: "pepper not loaded" },
    });
    const { port } = await start(() => readiness.check());

    const before = await fetchOps(port, "/readyz");
    expect(before.status).toBe(503);
    expect(before.headers["content-type"]).toMatch(/^application\/json/);
    expect(JSON.parse(before.body)).toEqual({
      ready: false,
      reasons: ["migrations pending", "pepper not loaded"],
    });

    readiness.markReady("migrations");
    readiness.markReady("pepper");
    const ready = await fetchOps(port, "/readyz");
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({ ready: true, reasons: [] });

    readiness.markShuttingDown();
    const draining = await fetchOps(port, "/readyz");
    expect(draining.status).toBe(503);
    expect(JSON.parse(draining.body)).toEqual({ ready: false, reasons: ["shutting down"] });
  });

  it("answers /readyz 503 with a fixed reason when the readiness check throws, logging the cause", async () => {
    const { port, logs } = await start(async () => {
      throw new Error("connect ECONNREFUSED postgres://keybroker:hunter2@db");
    });

    const reply = await fetchOps(port, "/readyz");

    expect(reply.status).toBe(503);
    expect(JSON.parse(reply.body)).toEqual({ ready: false, reasons: ["readiness check failed"] });
    expect(reply.body).not.toContain("hunter2");
    expect(logs.text()).toContain("readiness check threw");
  });

  it("serves /metrics in the Prometheus text format with the recorded counts", async () => {
    const { metrics, port } = await start();
    metrics.rpcCompleted({
      service: "keybroker.v1.SecretService",
      method: "PutSecret",
      type: "unary",
      code: 0,
      durationMs: 4,
    });
    metrics.auditWriteFailed();

    const reply = await fetchOps(port, "/metrics");

    expect(reply.status).toBe(200);
    expect(reply.headers["content-type"]).toBe("text/plain; version=0.0.4; charset=utf-8");
    expect(reply.body).toContain(
      'keybroker_rpc_requests_total{service="keybroker.v1.SecretService",method="PutSecret",code="OK"} 1',
    );
    expect(reply.body).toContain("keybroker_audit_write_failures_total 1");
    expect(reply.body).toContain("# TYPE keybroker_rpc_duration_seconds histogram");
  });

  it("ignores a query string on a known path and sends no body for HEAD", async () => {
    const { port } = await start();

    expect((await fetchOps(port, "/livez?verbose=1")).status).toBe(200);
    const head = await fetchOps(port, "/metrics", { method: "HEAD" });
    expect(head.status).toBe(200);
    expect(head.body).toBe("");
  });

  it("answers 404 for any other path and 405 for other methods, without echoing the path into logs", async () => {
    const { port, logs } = await start();
    const tokenPath = "/debug?access_token=eyJcanary.token.value";

    const unknown = await fetchOps(port, tokenPath);
    const root = await fetchOps(port, "/");
    const post = await fetchOps(port, "/metrics", { method: "POST" });

    expect(unknown.status).toBe(404);
    expect(unknown.body).not.toContain("canary");
    expect(root.status).toBe(404);
    expect(post.status).toBe(405);
    expect(post.headers.allow).toBe("GET, HEAD");
    expect(logs.text()).not.toContain("canary");
  });

  it("binds only the host it is told, never every interface", async () => {
    const { port } = await start();

    expect(listeningAddresses(port)).toEqual(["127.0.0.1"]);
  });

  it("rejects listen when the port is taken", async () => {
    const { port } = await start();
    const second = createOpsServer({
      metrics: createMetrics(),
      readiness: async () => ({ ready: true, reasons: [] }),
      logger: captureLogs().logger,
    });

    await expect(second.listen(HOST, port)).rejects.toMatchObject({ code: "EADDRINUSE" });
  });

  it("closes promptly even while a scraper holds a keep-alive connection", async () => {
    const { server, port } = await start();
    const agent = new Agent({ keepAlive: true });
    try {
      expect((await fetchOps(port, "/livez", { agent })).status).toBe(200);

      const began = Date.now();
      await server.close();

      expect(Date.now() - began).toBeLessThan(1_000);
      await expect(fetchOps(port, "/livez")).rejects.toMatchObject({ code: "ECONNREFUSED" });
    } finally {
      agent.destroy();
    }
  });
});
