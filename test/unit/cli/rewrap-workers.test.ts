import { describe, expect, it } from "vitest";
import { combineReports, type WorkerOutcome, withoutWorkersFlag } from "../../../src/cli/rewrap-workers.js";
import type { RewrapReport } from "../../../src/rotation/rewrap-job.js";

const report = (over: Partial<RewrapReport>): RewrapReport => ({
  rewrapped: 0,
  skipped: 0,
  failed: 0,
  seconds: 1,
  remaining: 0,
  retries: 0,
  stopped: false,
  ...over,
});

const outcome = (worker: number, over: Partial<WorkerOutcome>): WorkerOutcome => ({
  worker,
  pid: 1000 + worker,
  exitCode: 0,
  signal: null,
  report: undefined,
  failed: false,
  ...over,
});

describe("rewrap --workers, the parent's side", () => {
  it("L288 gives each worker every argument but --workers, in either spelling", () => {
    expect(withoutWorkersFlag(["--to", "local:2", "--workers", "2", "--rate", "500", "--json"])).toEqual([
      "--to",
      "local:2",
      "--rate",
      "500",
      "--json",
    ]);
    expect(withoutWorkersFlag(["--workers=4", "--to", "alias/keybroker"])).toEqual([
      "--to",
      "alias/keybroker",
    ]);
  });

  it("L288 sums the workers' counts into one report, takes the wall time and rows left from the parent, and is stopped if any was", () => {
    const combined = combineReports(
      {
        stopRequested: false,
        outcomes: [
          outcome(1, { report: report({ rewrapped: 60, skipped: 1, retries: 2, seconds: 9 }) }),
          outcome(2, {
            exitCode: 130,
            report: report({ rewrapped: 40, failed: 1, stopped: true, seconds: 8 }),
          }),
          outcome(3, { exitCode: null, signal: "SIGKILL", failed: true }),
        ],
      },
      { seconds: 10, remaining: 7 },
    );

    expect(combined).toEqual({
      rewrapped: 100,
      skipped: 1,
      failed: 1,
      seconds: 10,
      remaining: 7,
      retries: 2,
      stopped: true,
    });
  });

  it("L289 counts a run the operator stopped as stopped even when no worker had started its job yet", () => {
    const combined = combineReports(
      { stopRequested: true, outcomes: [outcome(1, { exitCode: null, signal: "SIGINT" })] },
      { seconds: 2, remaining: 301 },
    );

    expect(combined).toMatchObject({ rewrapped: 0, remaining: 301, stopped: true });
  });
});
