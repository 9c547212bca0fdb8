import { describe, expect, it } from "vitest";
import type { AuditEvent } from "../../../src/audit/audit-event.js";
import type { AuditLog } from "../../../src/audit/audit-log.js";
import { createAuditedRunner } from "../../../src/audit/audited-operation.js";
import { BrokerError } from "../../../src/errors.js";
import { captureLogs } from "../../support/captured-logs.js";

interface Recorded {
  readonly event: AuditEvent;
  readonly deferred: boolean;
  commit(): void;
  fail(err: unknown): void;
}

/** An AuditLog whose rows commit (or fail) only when the test says so; `log` lists what happened. */
function controlledAuditLog() {
  const rows: Recorded[] = [];
  const log: string[] = [];
  const audit: AuditLog = {
    record(event, options) {
      return new Promise<void>((resolve, reject) => {
        log.push(`record ${event.action}:${event.outcome}`);
        rows.push({
          event,
          deferred: options?.deferred === true,
          commit: () => {
            log.push(`commit ${event.action}:${event.outcome}`);
            resolve();
          },
          fail: reject,
        });
      });
    },
    flush: async () => {},
    close: async () => {},
  };
  return { audit, rows, log };
}

const actor = { requestId: "req-1", callerKeyId: "ck_1", userRef: Buffer.alloc(32, 7) };
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));
const sensitive = { action: "proxy.call" as const, sensitive: true, target: "secret-1" };

describe("audited operations", () => {
  it("start the read at once but use it only after the started row is committed (I8)", async () => {
    const { audit, rows, log } = controlledAuditLog();
    const runner = createAuditedRunner({ audit, logger: captureLogs().logger });
    const result = runner.runWithRead(
      actor,
      sensitive,
      async () => {
        log.push("read");
        return "sealed";
      },
      async (sealed) => {
        log.push(`use ${sealed}`);
        return "done";
      },
    );
    await turn();
    expect(log).toEqual(["read", "record proxy.call:started"]);
    rows[0]?.commit();
    expect(await result).toBe("done");
    expect(log.slice(2, 4)).toEqual(["commit proxy.call:started", "use sealed"]);
  });

  it("answer a sensitive operation without waiting for its outcome row, which is recorded deferred", async () => {
    const { audit, rows } = controlledAuditLog();
    const runner = createAuditedRunner({ audit, logger: captureLogs().logger });
    const result = runner.run(
      actor,
      { ...sensitive, resultDetail: () => ({ upstreamStatus: 200 }) },
      async () => 42,
    );
    await turn();
    rows[0]?.commit();
    expect(await result).toBe(42); // resolved although the outcome row never committed
    expect(rows.map((r) => [r.event.outcome, r.deferred])).toEqual([
      ["started", false],
      ["ok", true],
    ]);
    expect(rows[1]?.event.detail).toEqual({ upstreamStatus: 200 });
  });

  it("never use the read when the started row cannot be written, and fail UNAVAILABLE", async () => {
    const { audit, rows } = controlledAuditLog();
    const runner = createAuditedRunner({ audit, logger: captureLogs().logger });
    let used = false;
    const result = runner.runWithRead(
      actor,
      sensitive,
      () => Promise.reject(new BrokerError("not_found", "secret not found")),
      async () => {
        used = true;
      },
    );
    await turn();
    rows[0]?.fail(new BrokerError("unavailable", "audit trail unavailable"));
    await expect(result).rejects.toMatchObject({ code: "unavailable" });
    expect(used).toBe(false);
    expect(rows).toHaveLength(1);
  });

  it("record a sensitive operation's failure with its code, deferred, and rethrow it", async () => {
    const { audit, rows } = controlledAuditLog();
    const runner = createAuditedRunner({ audit, logger: captureLogs().logger });
    const result = runner.runWithRead(
      actor,
      sensitive,
      () => Promise.reject(new BrokerError("not_found", "secret not found")),
      async () => "unreachable",
    );
    await turn();
    rows[0]?.commit();
    await expect(result).rejects.toMatchObject({ code: "not_found" });
    expect(rows.map((r) => [r.event.outcome, r.event.code, r.deferred])).toEqual([
      ["started", null, false],
      ["error", "not_found", true],
    ]);
  });

  it("return a read's result only once its row is committed, and nothing if it cannot be", async () => {
    const { audit, rows } = controlledAuditLog();
    const runner = createAuditedRunner({ audit, logger: captureLogs().logger });
    let settled = false;
    const read = runner
      .run(
        actor,
        { action: "secret.list", sensitive: false, resultDetail: (l: string[]) => ({ count: l.length }) },
        async () => ["a", "b"],
      )
      .finally(() => {
        settled = true;
      });
    await turn();
    expect(rows.map((r) => [r.event.outcome, r.deferred, r.event.detail])).toEqual([
      ["ok", false, { count: 2 }],
    ]);
    expect(settled).toBe(false);
    rows[0]?.commit();
    expect(await read).toEqual(["a", "b"]);

    const refused = runner.run(actor, { action: "secret.list", sensitive: false }, async () => ["c"]);
    await turn();
    rows[1]?.fail(new BrokerError("unavailable", "audit trail unavailable"));
    await expect(refused).rejects.toMatchObject({ code: "unavailable" });
  });
});
