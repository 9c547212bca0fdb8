/**
 * The bare proxy floor (issue 17 item 1): what a proxied call physically is, a gRPC round trip plus
 * an HTTPS client request, with no authentication, crypto, audit, policy or scrubbing. The broker's
 * own server stack (src/api's grpc-js and Connect servers, call context, error mapping, per-call
 * metrics) serves keybroker.v1.ProxyService/Call, and each call makes the same undici request
 * (a Pool per origin, 16 connections, pipelining 1, as outbound-client.ts does) to the same upstream
 * with the bearer credential, then answers its status, headers and body.
 *
 * Env: BARE_UPSTREAM_ORIGIN (https://127.0.0.1:PORT), BARE_UPSTREAM_PATH_PREFIX ("/bearer"),
 * BARE_UPSTREAM_BEARER, BARE_UPSTREAM_CA_FILE. Prints `{"grpcPort":N,"connectPort":M}` once
 * listening; stops on SIGTERM. Run as its own process so its CPU is read from /proc alone.
 */
import { readFileSync } from "node:fs";
import { Pool } from "undici";
import { createConnectServer } from "../../src/api/transport/connect-server.js";
import { createGrpcServer } from "../../src/api/transport/grpc-server.js";
import { registerService, type ServiceRegistration } from "../../src/api/transport/handlers.js";
import { ProxyService } from "../../src/gen/keybroker/v1/proxy_pb.js";
import { createLogger } from "../../src/log/logger.js";
import { createMetrics } from "../../src/observability/metrics.js";

const need = (name: string): string => {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`${name} is required`);
  return value;
};
const origin = need("BARE_UPSTREAM_ORIGIN");
const prefix = process.env.BARE_UPSTREAM_PATH_PREFIX ?? "";
const authorization = `Bearer ${need("BARE_UPSTREAM_BEARER")}`;
const pool = new Pool(origin, {
  connect: { ca: readFileSync(need("BARE_UPSTREAM_CA_FILE")) },
  connections: 16,
  pipelining: 1,
  keepAliveTimeout: 10_000,
});

/** The same request the broker makes for a bearer provider: the caller's method and path, the credential. */
async function forward(request: { method: string; path: string }, signal: AbortSignal) {
  const res = await pool.request({
    method: (request.method === "" ? "GET" : request.method) as "GET",
    path: `${prefix}${request.path}`,
    headers: { authorization },
    signal,
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  const headers: Array<{ name: string; value: string }> = [];
  for (const [name, value] of Object.entries(res.headers)) {
    if (typeof value === "string") headers.push({ name, value });
  }
  return { status: res.statusCode, headers, body };
}

const services: ServiceRegistration[] = [
  registerService(ProxyService, {
    call: (request, ctx) => forward(request, ctx.signal),
    async *callStream(request, ctx) {
      const { status, headers, body } = await forward(request, ctx.signal);
      yield { part: { case: "head", value: { status, headers } } };
      yield { part: { case: "chunk", value: body } };
    },
  }),
];
const logger = createLogger({ level: "warn" });
const metrics = createMetrics({ processMetrics: false });
const onCallEnd = metrics.rpcCompleted.bind(metrics);

const grpc = createGrpcServer({ services, logger, onCallEnd });
const connect = createConnectServer({ services, logger, onCallEnd });
const grpcPort = await grpc.listen("127.0.0.1", 0);
const connectPort = await connect.listen("127.0.0.1", 0);
console.log(JSON.stringify({ grpcPort, connectPort }));

process.once("SIGTERM", () => {
  void Promise.all([grpc.shutdown(1000), connect.shutdown(1000), pool.close()]).then(() => process.exit(0));
});
