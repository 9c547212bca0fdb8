import { Writable } from "node:stream";
import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { type CallAbort, createCallLifecycle } from "../../../../src/api/transport/call-lifecycle.js";
import { BrokerError } from "../../../../src/errors.js";
import { createLogger } from "../../../../src/log/logger.js";
import type { CallEndEvent } from "../../../../src/observability/call-end.js";

const ROUTE = {
  service: "keybroker.v1.SecretService",
  method: "ListSecrets",
  path: "keybroker.v1.SecretService/ListSecrets",
  type: "unary",
} as const;

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

const NO_STEPS = {
  stopAccepting: () => undefined,
  abortReason: new BrokerError("unavailable", "server is shutting down"),
  close: () => undefined,
};

describe("call lifecycle", () => {
  it("admits calls until shutdown begins, then refuses them with UNAVAILABLE", async () => {
    const lifecycle = createCallLifecycle(capturingLogger());
    expect(() => lifecycle.admit()).not.toThrow();

    await lifecycle.shutdown(10, { ...NO_STEPS, drain: () => lifecycle.idle() });

    expect(() => lifecycle.admit()).toThrow(expect.objectContaining({ code: "unavailable" }));
  });

  it("reports every finished call once, with its code and route, to the call-end listener", () => {
    const events: CallEndEvent[] = [];
    const lifecycle = createCallLifecycle({ ...capturingLogger(), onCallEnd: (event) => events.push(event) });

    lifecycle.end(lifecycle.start(ROUTE, "req-1"), status.NOT_FOUND);

    expect(events).toEqual([
      {
        service: ROUTE.service,
        method: ROUTE.method,
        type: "unary",
        code: status.NOT_FOUND,
        durationMs: expect.any(Number),
      },
    ]);
  });

  it("logs a throwing call-end listener instead of failing the call", () => {
    const { logger, lines } = capturingLogger();
    const lifecycle = createCallLifecycle({
      logger,
      onCallEnd: () => {
        throw new Error("metrics broke");
      },
    });

    expect(() => lifecycle.end(lifecycle.start(ROUTE, "req-1"), status.OK)).not.toThrow();
    expect(lines).toContainEqual(
      expect.objectContaining({ level: "error", msg: "onCallEnd listener threw" }),
    );
  });

  it("maps a failure to its status and logs it", () => {
    const { logger, lines } = capturingLogger();
    const lifecycle = createCallLifecycle({ logger });

    const result = lifecycle.fail(
      lifecycle.start(ROUTE, "req-1"),
      new BrokerError("not_found", "no such secret"),
      undefined,
    );

    expect(result).toMatchObject({ code: status.NOT_FOUND, message: "no such secret" });
    expect(lines).toContainEqual(expect.objectContaining({ requestId: "req-1", brokerCode: "not_found" }));
  });

  it("records a handler giving up on its aborted signal as the abort, without logging a failure", () => {
    const { logger, lines } = capturingLogger();
    const lifecycle = createCallLifecycle({ logger });
    const reason = new BrokerError("unavailable", "call ended");
    const abort: CallAbort = {
      status: { code: status.CANCELLED, message: "" },
      signalReason: reason,
      final: false,
    };

    expect(lifecycle.fail(lifecycle.start(ROUTE, "req-1"), reason, abort)).toEqual(abort.status);
    expect(lines.map((line) => line.msg)).toEqual(["call aborted"]);
  });

  it("records a real failure after a final abort as the abort, and one before it as the failure", () => {
    const lifecycle = createCallLifecycle(capturingLogger());
    const call = lifecycle.start(ROUTE, "req-1");
    const failure = new BrokerError("not_found", "no such secret");
    const gone = { status: { code: status.CANCELLED, message: "" }, signalReason: undefined };

    expect(lifecycle.fail(call, failure, { ...gone, final: true }).code).toBe(status.CANCELLED);
    expect(lifecycle.fail(call, failure, { ...gone, final: false }).code).toBe(status.NOT_FOUND);
  });

  it("lets in-flight work finish within the grace period without aborting it", async () => {
    const lifecycle = createCallLifecycle(capturingLogger());
    const aborted: unknown[] = [];
    const untrack = lifecycle.track({ abort: (reason) => aborted.push(reason) });
    setTimeout(untrack, 20);
    const closed: boolean[] = [];

    await lifecycle.shutdown(1_000, {
      ...NO_STEPS,
      drain: () => lifecycle.idle(),
      close: (drainedInTime) => {
        closed.push(drainedInTime);
      },
    });

    expect(aborted).toEqual([]);
    expect(closed).toEqual([true]);
  });

  it("aborts work still in flight when the grace period ends, then closes; a second shutdown is the same one", async () => {
    const lifecycle = createCallLifecycle(capturingLogger());
    const aborted: unknown[] = [];
    const untrack = lifecycle.track({
      abort: (reason) => {
        aborted.push(reason);
        untrack();
      },
    });
    const closed: boolean[] = [];
    const steps = {
      ...NO_STEPS,
      drain: () => lifecycle.idle(),
      close: (drainedInTime: boolean) => {
        closed.push(drainedInTime);
      },
    };

    const first = lifecycle.shutdown(20, steps);
    const second = lifecycle.shutdown(20, steps);
    await first;

    expect(second).toBe(first);
    expect(aborted).toEqual([NO_STEPS.abortReason]);
    expect(closed).toEqual([false]);
  });
});
