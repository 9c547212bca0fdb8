import { setLogger } from "@grpc/grpc-js";
import type { Logger } from "../../log/logger.js";

// grpc-js prints the rejected value: `Failed to add metadata entry authorization: Bearer ...`.
const METADATA_REJECTED = /^Failed to add metadata entry ([^:\s]{1,100}):/;

/**
 * Sends grpc-js's own log lines to our logger instead of stderr, with header values removed.
 * grpc-js logs, at its default level, every request header it cannot parse (e.g. a token with
 * a non-ASCII byte) together with the raw value, so a caller's credential would otherwise
 * reach the console unredacted. The grpc-js logger is process-wide: the last call wins.
 */
export function routeGrpcLibraryLogs(logger: Logger): void {
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
