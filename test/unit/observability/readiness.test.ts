import { describe, expect, it } from "vitest";
import { createReadiness } from "../../../src/observability/readiness.js";

const parts = { migrations: "migrations pending", pepper: "pepper not loaded" } as const;

describe("readiness", () => {
  it("is not ready until every start-up part is marked, listing what is still missing", async () => {
    const readiness = createReadiness({ parts });
    expect(await readiness.check()).toEqual({
      ready: false,
      reasons: ["migrations pending", "pepper not loaded"],
    });

    readiness.markReady("migrations");
    expect(await readiness.check()).toEqual({ ready: false, reasons: ["pepper not loaded"] });

    readiness.markReady("pepper");
    expect(await readiness.check()).toEqual({ ready: true, reasons: [] });
  });

  it("becomes unready again when a part is taken out, and ready when it returns", async () => {
    const readiness = createReadiness({ parts });
    readiness.markReady("migrations");
    readiness.markReady("pepper");

    readiness.markNotReady("pepper");
    expect(await readiness.check()).toEqual({ ready: false, reasons: ["pepper not loaded"] });
    readiness.markReady("pepper");
    expect((await readiness.check()).ready).toBe(true);
  });

  it("reports only shutting down once shutdown starts, even if everything else is ready", async () => {
    const readiness = createReadiness({ parts });
    readiness.markReady("migrations");
    readiness.markReady("pepper");

    readiness.markShuttingDown();
    readiness.markReady("pepper");
    expect(await readiness.check()).toEqual({ ready: false, reasons: ["shutting down"] });
  });

  it("reports a failing probe by its fixed reason, never by the error it threw", async () => {
    const readiness = createReadiness({
      parts: {},
      probes: [
        {
          reason: "database unreachable",
          check: async () => {
            throw new Error("connect ECONNREFUSED postgres://keybroker:hunter2@db:5432");
          },
        },
        { reason: "never shown", check: async () => undefined },
      ],
    });

    const report = await readiness.check();
    expect(report).toEqual({ ready: false, reasons: ["database unreachable"] });
    expect(JSON.stringify(report)).not.toContain("hunter2");
  });

  it("fails a probe slower than its deadline and aborts it", async () => {
    let aborted = false;
    const readiness = createReadiness({
      parts: {},
      probeTimeoutMs: 20,
      probes: [
        {
          reason: "database slow",
          check: (signal) =>
            new Promise<void>((resolve) => {
              signal.addEventListener("abort", () => {
                aborted = true;
              });
              setTimeout(resolve, 2_000).unref();
            }),
        },
      ],
    });

    const began = Date.now();
    expect(await readiness.check()).toEqual({ ready: false, reasons: ["database slow"] });
    expect(Date.now() - began).toBeLessThan(1_000);
    expect(aborted).toBe(true);
  });

  it("does not run probes while start-up parts are still pending", async () => {
    let probed = 0;
    const readiness = createReadiness({
      parts,
      probes: [
        {
          reason: "database unreachable",
          check: async () => {
            probed += 1;
          },
        },
      ],
    });

    await readiness.check();
    expect(probed).toBe(0);
    readiness.markReady("migrations");
    readiness.markReady("pepper");
    expect(await readiness.check()).toEqual({ ready: true, reasons: [] });
    expect(probed).toBe(1);
  });
});
