import { Writable } from "node:stream";
import { Code } from "@connectrpc/connect";
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import {
  grpcStatusOf,
  logCallFailure,
  reportCallFailure,
  toStatus,
} from "../../../../src/api/transport/error-status.js";
import { BrokerError, type BrokerErrorCode } from "../../../../src/errors.js";
import { createLogger } from "../../../../src/log/logger.js";

const CANARY = "CANARY-93c1e0";

// `satisfies` makes this fail to compile when a code is added to BrokerErrorCode.
const EXPECTED = {
  invalid_argument: status.INVALID_ARGUMENT,
  unauthenticated: status.UNAUTHENTICATED,
  permission_denied: status.PERMISSION_DENIED,
  not_found: status.NOT_FOUND,
  already_exists: status.ALREADY_EXISTS,
  failed_precondition: status.FAILED_PRECONDITION,
  resource_exhausted: status.RESOURCE_EXHAUSTED,
  unavailable: status.UNAVAILABLE,
  deadline_exceeded: status.DEADLINE_EXCEEDED,
  data_loss: status.DATA_LOSS,
  internal: status.INTERNAL,
} satisfies Record<BrokerErrorCode, status>;
const CODES = Object.entries(EXPECTED) as Array<[BrokerErrorCode, status]>;

function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = createLogger({
    level: "debug",
    destination: new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        callback();
      },
    }),
  });
  return { logger, lines };
}

const CALL = { requestId: "req-1", method: "keybroker.v1.SecretService/PutSecret" };

describe("toStatus", () => {
  it.each(CODES)("maps BrokerError %s to gRPC status %i and keeps its message", (code, expected) => {
    const err = new BrokerError(code, "safe text", { cause: new Error(CANARY) });

    expect(toStatus(err)).toEqual({ code: expected, message: "safe text", brokerCode: code });
    expect(grpcStatusOf(code)).toBe(expected);
  });

  it.each([
    ["an Error", new Error(`connection to db failed: password=${CANARY}`)],
    ["a TypeError", new TypeError(`cannot read ${CANARY}`)],
    ["a string", CANARY],
    ["undefined", undefined],
    ["an object posing as a BrokerError", { name: "BrokerError", code: "not_found", message: CANARY }],
  ])("answers INTERNAL 'internal error' for %s, revealing nothing of it", (_kind, thrown) => {
    const result = toStatus(thrown);

    expect(result).toEqual({ code: status.INTERNAL, message: "internal error" });
    expect(JSON.stringify(result)).not.toContain(CANARY);
  });

  it("answers INTERNAL for a raw driver error: outages reach the edge as BrokerError('unavailable')", () => {
    const refused = Object.assign(new Error(`connect ECONNREFUSED ${CANARY}`), { code: "ECONNREFUSED" });
    const translated = new BrokerError("unavailable", "database unavailable", { cause: refused });

    expect(toStatus(refused)).toEqual({ code: status.INTERNAL, message: "internal error" });
    expect(toStatus(translated)).toEqual({
      code: status.UNAVAILABLE,
      message: "database unavailable",
      brokerCode: "unavailable",
    });
  });

  it("carries a refused credential's machine-readable reason", () => {
    const err = new BrokerError("unauthenticated", "invalid caller key", { reason: "caller_key_invalid" });

    expect(toStatus(err)).toEqual({
      code: status.UNAUTHENTICATED,
      message: "invalid caller key",
      brokerCode: "unauthenticated",
      reason: "caller_key_invalid",
    });
  });

  it("relies on Connect's Code using the same numbers as gRPC's status", () => {
    expect([
      Code.InvalidArgument,
      Code.Unauthenticated,
      Code.PermissionDenied,
      Code.NotFound,
      Code.AlreadyExists,
      Code.FailedPrecondition,
      Code.ResourceExhausted,
      Code.Unavailable,
      Code.DeadlineExceeded,
      Code.DataLoss,
      Code.Internal,
      Code.Canceled,
    ]).toEqual([...CODES.map(([, expected]) => expected), status.CANCELLED]);
  });
});

describe("logCallFailure", () => {
  it.each(["internal", "data_loss"] as const)("logs %s at error level with its cause", (code) => {
    const { logger, lines } = capturingLogger();
    const err = new BrokerError(code, "safe", { cause: new Error(`root ${CANARY}`) });

    logCallFailure(logger, err, toStatus(err), CALL);

    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: "error", ...CALL, brokerCode: code, grpcCode: EXPECTED[code] });
    expect(JSON.stringify(lines[0])).toContain(CANARY);
  });

  it.each(["unavailable", "deadline_exceeded"] as const)("logs %s at warn level with its cause", (code) => {
    const { logger, lines } = capturingLogger();
    const err = new BrokerError(code, "safe", { cause: new Error(`root ${CANARY}`) });

    logCallFailure(logger, err, toStatus(err), CALL);

    expect(lines[0]).toMatchObject({ level: "warn", ...CALL, brokerCode: code });
    expect(JSON.stringify(lines[0])).toContain(CANARY);
  });

  it.each(
    CODES.map(([code]) => code).filter(
      (code) => !["internal", "data_loss", "unavailable", "deadline_exceeded"].includes(code),
    ),
  )("logs the caller's mistake %s at info level without its cause", (code) => {
    const { logger, lines } = capturingLogger();
    const err = new BrokerError(code, "safe text", { cause: new Error(`root ${CANARY}`) });

    logCallFailure(logger, err, toStatus(err), CALL);

    expect(lines[0]).toMatchObject({ level: "info", ...CALL, brokerCode: code, reason: "safe text" });
    expect(JSON.stringify(lines[0])).not.toContain(CANARY);
  });

  it("logs an unexpected error at error level with the error itself", () => {
    const { logger, lines } = capturingLogger();

    const result = reportCallFailure(logger, new RangeError("offset out of range"), CALL);

    expect(result.code).toBe(status.INTERNAL);
    expect(lines[0]).toMatchObject({ level: "error", ...CALL, grpcCode: status.INTERNAL });
    expect(lines[0]?.err).toMatchObject({ type: "RangeError", message: "offset out of range" });
  });
});
