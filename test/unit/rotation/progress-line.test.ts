import { describe, expect, it } from "vitest";
import { createProgressLine } from "../../../src/cli/rewrap-command.js";

function capture(isTTY: boolean) {
  const chunks: string[] = [];
  return { chunks, out: { isTTY, write: (text: string) => chunks.push(text) } };
}

describe("rewrap progress line", () => {
  it("rewrites one line in place on a terminal and ends it with a newline", () => {
    let now = 0;
    const { chunks, out } = capture(true);
    const line = createProgressLine(out, { now: () => now, everyMs: 200 });

    line.update({ done: 10, total: 100, rate: 5 });
    now = 50;
    line.update({ done: 20, total: 100, rate: 5 }); // too soon: not drawn
    now = 300;
    line.update({ done: 30, total: 100, rate: 10 });
    line.finish();

    expect(chunks).toEqual([
      "\r\x1b[Krewrap: 10 / 100 rows (10.0%), 5 rows/s, ETA 18 s",
      "\r\x1b[Krewrap: 30 / 100 rows (30.0%), 10 rows/s, ETA 7 s",
      "\n",
    ]);
  });

  it("writes a whole line every few seconds to a log, and the last state at the end", () => {
    let now = 0;
    const { chunks, out } = capture(false);
    const line = createProgressLine(out, { now: () => now });

    line.update({ done: 1, total: 2_000, rate: 1 });
    now = 1_000;
    line.update({ done: 1_000, total: 2_000, rate: 1_000 });
    now = 5_000;
    line.update({ done: 1_500, total: 2_000, rate: 300 });
    now = 6_000;
    line.update({ done: 2_000, total: 2_000, rate: 333 });
    line.finish();

    expect(chunks).toEqual([
      "rewrap: 1 / 2,000 rows (0.1%), 1 rows/s, ETA 1999 s\n",
      "rewrap: 1,500 / 2,000 rows (75.0%), 300 rows/s, ETA 2 s\n",
      "rewrap: 2,000 / 2,000 rows (100.0%), 333 rows/s, ETA 0 s\n",
    ]);
  });
});
