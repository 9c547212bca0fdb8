import { describe, expect, it } from "vitest";
import type { AuditEvent } from "../../../src/audit/audit-event.js";
import type { AuditLog, AuditRecordOptions } from "../../../src/audit/audit-log.js";
import { createAuditedRunner } from "../../../src/audit/audited-operation.js";
import { BrokerError } from "../../../src/errors.js";
import type { SecretForUse, SecretForUseKey } from "../../../src/store/secrets.repository.js";
import { captureLogs } from "../../support/captured-logs.js";

interface Recorded {
  readonly event: AuditEvent;
  readonly deferred: boolean;
  commit(): void;
  fail(err: unknown): void;
}

/**
 * An AuditLog whose rows commit (or fail) only when the test says so; `log` lists what happened.
 * A row recorded with a read "finds" what `stored` holds for its secret id.
 */
function controlledAuditLog(stored: ReadonlyMap<string, SecretForUse> = new Map()) {
  const rows: Recorded[] = [];
  const log: string[] = [];
  function enqueue(event: AuditEvent, options: AuditRecordOptions | undefined, read?: SecretForUseKey) {
    return new Promise<SecretForUse | undefined>((resolve, reject) => {
      log.push(
        `record ${event.action}:${event.outcome}${read === undefined ? "" : ` reading ${read.secretId}`}`,
      );
      rows.push({
        event,
        deferred: options?.deferred === true,
        commit: () => {
          log.push(`commit ${event.action}:${event.outcome}`);
          resolve(read === undefined ? undefined : stored.get(read.secretId));
        },
        fail: reject,
      });
    });
  }
  const audit: AuditLog = {
    async record(event, options) {
      await enqueue(event, options);
    },
    recordReading: (event, read, options) => enqueue(event, options, read),
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

  it("L283 read a secret with the started row: planned only once that row is committed, in its statement (I8)", async () => {
    const sealed = { secret: { id: "secret-1" } } as unknown as SecretForUse;
    const { audit, rows, log } = controlledAuditLog(new Map([["secret-1", sealed]]));
    const runner = createAuditedRunner({ audit, logger: captureLogs().logger });
    const result = runner.runReadingSecret(
      actor,
      { ...sensitive, readDetail: (p: string) => ({ provider: p }) },
      { userRef: actor.userRef, secretId: "secret-1" },
      async (found) => {
        log.push(`plan ${found === sealed ? "found" : "missing"}`);
        return "prov";
      },
      async (planned) => {
        log.push(`use ${planned}`);
        return "done";
      },
    );
    await turn();
    // No read of its own: the started row carries it, and nothing is planned before its commit.
    expect(log).toEqual(["record proxy.call:started reading secret-1"]);
    rows[0]?.commit();
    expect(await result).toBe("done");
    expect(log.slice(1, 4)).toEqual(["commit proxy.call:started", "plan found", "use prov"]);
    expect(rows[1]?.event).toMatchObject({ outcome: "ok", detail: { provider: "prov" } });
  });

  it("L284 read a secret with the started row: nothing planned when that row fails; a missing secret's refusal gets its row", async () => {
    const { audit, rows } = controlledAuditLog();
    const runner = createAuditedRunner({ audit, logger: captureLogs().logger });
    let planned = 0;
    const plan = async (found: SecretForUse | undefined) => {
      planned += 1;
      if (found === undefined) throw new BrokerError("not_found", "secret not found");
      return "never";
    };
    const key = { userRef: actor.userRef, secretId: "secret-2" };
    const refused = runner.runReadingSecret(actor, sensitive, key, plan, async () => "unreachable");
    await turn();
    rows[0]?.fail(new BrokerError("unavailable", "audit trail unavailable"));
    await expect(refused).rejects.toMatchObject({ code: "unavailable" });
    expect(planned).toBe(0);

    const missing = runner.runReadingSecret(actor, sensitive, key, plan, async () => "unreachable");
    await turn();
    rows[1]?.commit();
    await expect(missing).rejects.toMatchObject({ code: "not_found" });
    expect(planned).toBe(1);
    expect(rows.slice(1).map((r) => [r.event.outcome, r.event.code, r.deferred])).toEqual([
      ["started", null, false],
      ["error", "not_found", true],
    ]);
    // Only sensitive operations may read this way: they are the ones with a started row.
    await expect(
      runner.runReadingSecret(actor, { ...sensitive, sensitive: false }, key, plan, async () => "x"),
    ).rejects.toMatchObject({ code: "internal" });
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
