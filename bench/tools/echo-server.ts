/**
 * The transport floor: the broker's own server stack (src/api's grpc-js and Connect servers, call
 * context, error mapping, the same per-call metrics) serving one echo RPC and nothing else. Run as
 * its own process by bench/run.ts, which reads its CPU from /proc exactly as it reads the broker's.
 * Prints `{"grpcPort":N,"connectPort":M}` once listening; stops on SIGTERM.
 */
import type { DescMessage } from "@bufbuild/protobuf";
import { createConnectServer } from "../../src/api/transport/connect-server.js";
import { createGrpcServer } from "../../src/api/transport/grpc-server.js";
import type { ServiceRegistration, UnaryHandler } from "../../src/api/transport/handlers.js";
import { createLogger } from "../../src/log/logger.js";
import { createMetrics } from "../../src/observability/metrics.js";
import { echoServiceDesc } from "../lib/echo-service.js";

const service = echoServiceDesc();
// The request message is its own response: an echo does no work of its own.
const echo: UnaryHandler<DescMessage, DescMessage> = async (request) => request;
const services: ServiceRegistration[] = [{ service, handlers: { echo } }];
const logger = createLogger({ level: "warn" });
const metrics = createMetrics({ processMetrics: false });
const onCallEnd = metrics.rpcCompleted.bind(metrics);

const grpc = createGrpcServer({ services, logger, onCallEnd });
const connect = createConnectServer({ services, logger, onCallEnd });
const grpcPort = await grpc.listen("127.0.0.1", 0);
const connectPort = await connect.listen("127.0.0.1", 0);
console.log(JSON.stringify({ grpcPort, connectPort }));

process.once("SIGTERM", () => {
  void Promise.all([grpc.shutdown(1000), connect.shutdown(1000)]).then(() => process.exit(0));
});
