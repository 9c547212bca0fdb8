import { createConnectServer } from "../api/transport/connect-server.js";
import type { FormPostRoute } from "../api/transport/form-post-route.js";
import { createGrpcServer } from "../api/transport/grpc-server.js";
import type { ServiceRegistration } from "../api/transport/handlers.js";
import { loadServerTlsCredentials } from "../api/transport/tls-credentials.js";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import type { CallEndEvent } from "../observability/call-end.js";
import type { Metrics } from "../observability/metrics.js";
import { createOpsServer } from "../observability/ops-server.js";
import type { Readiness } from "../observability/readiness.js";
import type { Lifecycle } from "./lifecycle.js";

export interface ServersDeps {
  readonly config: Pick<Config, "grpc" | "grpcTls" | "connect" | "ops" | "shutdownGraceMs">;
  readonly services: readonly ServiceRegistration[];
  /** Plain HTTP POST routes on the Connect port (the back-channel logout endpoint). */
  readonly formRoutes?: readonly FormPostRoute[];
  readonly metrics: Pick<Metrics, "rpcCompleted" | "registry">;
  readonly readiness: Pick<Readiness<string>, "check" | "markShuttingDown">;
  readonly logger: Logger;
}

export interface BoundPorts {
  readonly grpcPort: number;
  readonly connectPort: number | undefined;
  readonly opsPort: number | undefined;
}

export interface Servers {
  /** Binds every configured port; the lifecycle's teardowns close whatever did bind. */
  listen(): Promise<BoundPorts>;
}

/**
 * The gRPC port, the optional Connect port and the optional ops port (metrics, health). The ops
 * server is registered first so it is torn down last of the three: the balancer must keep
 * reading "not ready" from /readyz while the RPC ports drain.
 */
export async function createServers(lifecycle: Lifecycle, deps: ServersDeps): Promise<Servers> {
  const { config, services, metrics, readiness, logger } = deps;
  const ops =
    config.ops === undefined
      ? undefined
      : createOpsServer({ metrics, readiness: () => readiness.check(), logger });
  if (ops !== undefined) lifecycle.defer("ops server", () => ops.close());

  const onCallEnd = (e: CallEndEvent) => metrics.rpcCompleted(e);
  const credentials =
    config.grpcTls === undefined ? undefined : await loadServerTlsCredentials(config.grpcTls);
  const grpc = createGrpcServer({
    services,
    logger,
    onCallEnd,
    ...(credentials === undefined ? {} : { credentials }),
  });
  const connect =
    config.connect === undefined
      ? undefined
      : createConnectServer({ services, logger, onCallEnd, formRoutes: deps.formRoutes ?? [] });
  // One teardown for both RPC ports: they drain together (each bounded by the grace period),
  // after readiness already says "shutting down".
  lifecycle.defer("rpc servers", async () => {
    readiness.markShuttingDown();
    await Promise.all([grpc.shutdown(config.shutdownGraceMs), connect?.shutdown(config.shutdownGraceMs)]);
  });

  return {
    async listen() {
      const opsPort =
        config.ops === undefined || ops === undefined
          ? undefined
          : await ops.listen(config.ops.host, config.ops.port);
      const grpcPort = await grpc.listen(config.grpc.host, config.grpc.port);
      const connectPort =
        config.connect === undefined || connect === undefined
          ? undefined
          : await connect.listen(config.connect.host, config.connect.port);
      return { grpcPort, connectPort, opsPort };
    },
  };
}
