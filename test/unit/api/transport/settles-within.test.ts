import { setTimeout as delay } from "node:timers/promises";
import { describe, expect, it } from "vitest";
import { settlesWithin } from "../../../../src/api/transport/settles-within.js";

describe("settlesWithin", () => {
  it("is true when the promise settles in time", async () => {
    expect(await settlesWithin(delay(5), 500)).toBe(true);
  });

  it("is false once the time is up", async () => {
    const started = Date.now();

    expect(await settlesWithin(new Promise(() => {}), 30)).toBe(false);
    expect(Date.now() - started).toBeGreaterThanOrEqual(25);
  });
});
