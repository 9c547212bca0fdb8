import { experimental, logVerbosity } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { routeGrpcLibraryLogs } from "../../../../src/api/transport/grpc-library-logs.js";
import { captureLogs } from "../../../support/captured-logs.js";

// createApp routes grpc-js's process-wide logger at the root; a second call (another app in
// the same process, a test harness) must replace the route, never add a second one.
describe("routing the grpc-js library logger", () => {
  it("is idempotent: routed twice, each library line is logged once, by the last logger", () => {
    const first = captureLogs();
    const second = captureLogs();
    routeGrpcLibraryLogs(first.logger);
    routeGrpcLibraryLogs(second.logger);

    experimental.log(logVerbosity.ERROR, "library error line");

    expect(first.lines).toEqual([]);
    expect(second.lines.filter((line) => line.includes("library error line"))).toHaveLength(1);
  });
});
