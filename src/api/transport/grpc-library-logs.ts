import { setLogger } from "@grpc/grpc-js";
import type { Logger } from "../../log/logger.js";

let routed = false;

// grpc-js prints the rejected value: `Failed to add metadata entry authorization: Bearer ...`.
const METADATA_REJECTED = /^Failed to add metadata entry ([^:\s]{1,100}):/;

/**
 * Sends grpc-js's own log lines to our logger instead of stderr, with header values removed.
 * grpc-js logs, at its default level, every request header it cannot parse (e.g. a token with
 * a non-ASCII byte) together with the raw value, so a caller's credential would otherwise
 * reach the console unredacted. The grpc-js logger is process-wide: the composition root calls
 * this once at start-up (the last call wins).
 */
export function routeGrpcLibraryLogs(logger: Logger): void {
  routed = true;
  const write = (level: "error" | "info" | "debug", message: unknown): void => {
    const text = typeof message === "string" ? message : String(message);
    const rejected = METADATA_REJECTED.exec(text);
    if (rejected !== null) {
      // The header name only: the value may be a credential.
      logger.warn({ header: rejected[1] }, "grpc-js dropped a malformed request header");
      return;
    }
    logger[level]({ source: "grpc-js" }, text);
  };
  setLogger({
    error: (message: unknown) => write("error", message),
    info: (message: unknown) => write("info", message),
    debug: (message: unknown) => write("debug", message),
  });
}

/**
 * Routes grpc-js's logs to `logger` unless something already did. createGrpcServer calls it so
 * that a server built without the composition root (tests, tools) still never lets grpc-js
 * print a token, while the root's own choice of logger is never replaced.
 */
export function routeGrpcLibraryLogsOnce(logger: Logger): void {
  if (!routed) {
    routeGrpcLibraryLogs(logger);
  }
}
