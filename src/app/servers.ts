import { receiveLimitFor } from "../api/transport/call-lifecycle.js";
import { createConnectServer } from "../api/transport/connect-server.js";
import type { FormPostRoute } from "../api/transport/form-post-route.js";
import { createGrpcServer } from "../api/transport/grpc-server.js";
import type { ServiceRegistration } from "../api/transport/handlers.js";
import { grpcServerCredentials, loadServerTls, nodeTlsOptions } from "../api/transport/tls-credentials.js";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import type { CallEndEvent } from "../observability/call-end.js";
import type { Metrics } from "../observability/metrics.js";
import { createOpsServer } from "../observability/ops-server.js";
import type { Readiness } from "../observability/readiness.js";
import type { Lifecycle } from "./lifecycle.js";

export interface ServersDeps {
  readonly config: Pick<
    Config,
    | "grpc"
    | "grpcTls"
    | "connect"
    | "ops"
    | "admin"
    | "plaintextListeners"
    | "listenerLimits"
    | "maxReceiveMessageBytes"
    | "shutdownGraceMs"
  >;
  /** Served on the app ports (gRPC and Connect). */
  readonly services: readonly ServiceRegistration[];
  /** Served on the admin port only, never on the app ports nor in their reflection (L6). */
  readonly adminServices: readonly ServiceRegistration[];
  /** The largest request body a provider accepts (F3). */
  readonly largestRequestBodyBytes: number;
  /** Plain HTTP POST routes on the Connect port (the back-channel logout endpoint). */
  readonly formRoutes?: readonly FormPostRoute[];
  readonly metrics: Pick<Metrics, "rpcCompleted" | "registry">;
  readonly readiness: Pick<Readiness<string>, "check" | "markShuttingDown">;
  readonly logger: Logger;
}

export interface BoundPorts {
  readonly grpcPort: number;
  readonly connectPort: number | undefined;
  readonly adminPort: number | undefined;
  readonly opsPort: number | undefined;
  /** The public OAuth callback listener (issue 15), when configured. */
  readonly publicPort?: number | undefined;
}

export interface Servers {
  /** Binds every configured port; the lifecycle's teardowns close whatever did bind. */
  listen(): Promise<BoundPorts>;
}

/**
 * The gRPC port, the optional Connect port, the optional admin port and the optional ops port
 * (metrics, health). The ops server is registered first so it is torn down last: the balancer
 * must keep reading "not ready" from /readyz while the RPC ports drain.
 */
export async function createServers(lifecycle: Lifecycle, deps: ServersDeps): Promise<Servers> {
  const { config, services, adminServices, metrics, readiness, logger } = deps;
  const ops =
    config.ops === undefined
      ? undefined
      : createOpsServer({ metrics, readiness: () => readiness.check(), logger });
  if (ops !== undefined) lifecycle.defer("ops server", () => ops.close());

  const onCallEnd = (e: CallEndEvent) => metrics.rpcCompleted(e);
  const limits = config.listenerLimits;
  const maxReceiveMessageBytes =
    config.maxReceiveMessageBytes ?? receiveLimitFor(deps.largestRequestBodyBytes);
  const common = { logger, onCallEnd, limits, maxReceiveMessageBytes };
  // One certificate for both app ports (M3): TLS on gRPC and Connect alike, or on neither.
  const appTls = config.grpcTls === undefined ? undefined : await loadServerTls(config.grpcTls);
  const grpc = createGrpcServer({
    ...common,
    services,
    ...(appTls === undefined
      ? {}
      : { credentials: grpcServerCredentials(appTls, limits.handshakeTimeoutMs) }),
  });
  const connect =
    config.connect === undefined
      ? undefined
      : createConnectServer({
          ...common,
          services,
          formRoutes: deps.formRoutes ?? [],
          ...(appTls === undefined ? {} : { tls: nodeTlsOptions(appTls, limits.handshakeTimeoutMs) }),
        });
  const adminTls = config.admin?.tls === undefined ? undefined : await loadServerTls(config.admin.tls);
  const admin =
    config.admin === undefined
      ? undefined
      : createGrpcServer({
          ...common,
          services: adminServices,
          ...(adminTls === undefined
            ? {}
            : { credentials: grpcServerCredentials(adminTls, limits.handshakeTimeoutMs) }),
        });
  // One teardown for the RPC ports: they drain together (each bounded by the grace period),
  // after readiness already says "shutting down".
  lifecycle.defer("rpc servers", async () => {
    readiness.markShuttingDown();
    await Promise.all([
      grpc.shutdown(config.shutdownGraceMs),
      connect?.shutdown(config.shutdownGraceMs),
      admin?.shutdown(config.shutdownGraceMs),
    ]);
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
      const adminPort =
        config.admin === undefined || admin === undefined
          ? undefined
          : await admin.listen(config.admin.host, config.admin.port);
      if (appTls === undefined && config.plaintextListeners === "mesh-mtls") {
        logger.info(
          "app ports are plaintext (KEYBROKER_ALLOW_PLAINTEXT_LISTENERS=mesh-mtls): a service-mesh sidecar must terminate mTLS in front of them",
        );
      }
      return { grpcPort, connectPort, adminPort, opsPort };
    },
  };
}
