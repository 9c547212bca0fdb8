import { describe, expect, it } from "vitest";
import type { AuditEvent } from "../../../src/audit/audit-event.js";
import { createAuthFailureSummary } from "../../../src/audit/auth-failure-summary.js";
import { captureLogs } from "../../support/captured-logs.js";

function fakeAudit() {
  const events: AuditEvent[] = [];
  return {
    events,
    record: async (event: AuditEvent) => {
      events.push(event);
    },
  };
}

describe("auth failure summary", () => {
  it("M4 logs at most one line per reason per log interval, with the count it suppressed", async () => {
    let clock = 0;
    const logs = captureLogs("warn");
    const audit = fakeAudit();
    const summary = createAuthFailureSummary({
      audit,
      logger: logs.logger,
      logIntervalMs: 10_000,
      now: () => clock,
    });

    for (let i = 0; i < 500; i++) summary.note("caller_key_missing");
    summary.note("caller_key_invalid");
    clock = 9_999;
    summary.note("caller_key_missing");
    clock = 10_000;
    summary.note("caller_key_missing");

    const lines = logs.lines.map((line) => JSON.parse(line) as { reason: string; suppressed: number });
    expect(lines.map(({ reason, suppressed }) => ({ reason, suppressed }))).toEqual([
      { reason: "caller_key_missing", suppressed: 0 },
      { reason: "caller_key_invalid", suppressed: 0 },
      { reason: "caller_key_missing", suppressed: 500 },
    ]);
    await summary.close();
  });

  it("M4 writes one auth.failure row per reason with its count and window, and nothing when idle", async () => {
    let clock = 1_000;
    const audit = fakeAudit();
    const summary = createAuthFailureSummary({ audit, now: () => clock });
    await summary.flush();
    expect(audit.events).toEqual([]);

    summary.note("caller_key_missing");
    summary.note("caller_key_missing");
    summary.note("caller_key_invalid");
    clock = 31_000;
    await summary.flush();
    expect(audit.events).toHaveLength(2);
    expect(audit.events.map((e) => [e.action, e.outcome, e.code, e.callerKeyId, e.detail])).toEqual(
      expect.arrayContaining([
        [
          "auth.failure",
          "error",
          "unauthenticated",
          null,
          { reason: "caller_key_missing", count: 2, durationMs: 30_000 },
        ],
        [
          "auth.failure",
          "error",
          "unauthenticated",
          null,
          { reason: "caller_key_invalid", count: 1, durationMs: 30_000 },
        ],
      ]),
    );

    await summary.flush();
    expect(audit.events).toHaveLength(2);
  });

  it("M4 flushes pending counts on close and counts nothing after it", async () => {
    const audit = fakeAudit();
    const summary = createAuthFailureSummary({ audit });
    summary.note("caller_key_missing");
    await summary.close();
    summary.note("caller_key_missing");
    await summary.flush();
    expect(audit.events.map((e) => e.detail?.count)).toEqual([1]);
  });
});
