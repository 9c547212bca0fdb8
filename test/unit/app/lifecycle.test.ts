import { describe, expect, it } from "vitest";
import { createLifecycle, unwindOnFailure } from "../../../src/app/lifecycle.js";
import { captureLogs } from "../../support/captured-logs.js";

function recordingLifecycle() {
  const logs = captureLogs();
  const lifecycle = createLifecycle({ logger: logs.logger });
  const order: string[] = [];
  const track = (name: string) => lifecycle.defer(name, () => void order.push(name));
  return { logs, lifecycle, order, track };
}

describe("lifecycle", () => {
  it("tears resources down in the reverse of the order they were registered", async () => {
    const { lifecycle, order, track } = recordingLifecycle();
    track("database");
    track("keyring");
    track("audit log");
    track("servers");

    await lifecycle.stop();

    expect(order).toEqual(["servers", "audit log", "keyring", "database"]);
  });

  it("waits for each asynchronous teardown before starting the next", async () => {
    const { lifecycle, order } = recordingLifecycle();
    lifecycle.defer("database", () => void order.push("database closed"));
    lifecycle.defer("servers", async () => {
      order.push("servers draining");
      await new Promise((resolve) => setTimeout(resolve, 20));
      order.push("servers drained");
    });

    await lifecycle.stop();

    expect(order).toEqual(["servers draining", "servers drained", "database closed"]);
  });

  it("unwinds what a failed build registered, newest first, then rethrows the build's error", async () => {
    const { lifecycle, order, track } = recordingLifecycle();
    const failure = new Error("providers file does not parse");

    const built = unwindOnFailure(lifecycle, async () => {
      track("database");
      track("keyring");
      throw failure;
    });

    await expect(built).rejects.toBe(failure);
    expect(order).toEqual(["keyring", "database"]);
  });

  it("returns the build's value and tears nothing down when the build succeeds", async () => {
    const { lifecycle, order, track } = recordingLifecycle();

    const value = await unwindOnFailure(lifecycle, async () => {
      track("database");
      return 42;
    });

    expect(value).toBe(42);
    expect(order).toEqual([]);
  });

  it("logs a failing teardown with its resource name and still runs the others", async () => {
    const { logs, lifecycle, order, track } = recordingLifecycle();
    track("database");
    lifecycle.defer("keyring", () => {
      throw new Error("socket already destroyed");
    });
    lifecycle.defer("audit log", () => Promise.reject(new Error("flush failed")));
    track("servers");

    await expect(lifecycle.stop()).resolves.toBeUndefined();

    expect(order).toEqual(["servers", "database"]);
    const failures = logs.lines
      .map((line) => JSON.parse(line) as { msg?: string; resource?: string })
      .filter((l) => l.msg === "teardown failed");
    expect(failures.map((l) => l.resource)).toEqual(["audit log", "keyring"]);
  });

  it("runs each teardown once however often stop is called, even concurrently", async () => {
    const { lifecycle, order, track } = recordingLifecycle();
    track("database");
    track("servers");

    const first = lifecycle.stop();
    const second = lifecycle.stop();
    await Promise.all([first, second]);
    await lifecycle.stop();

    expect(second).toBe(first);
    expect(order).toEqual(["servers", "database"]);
  });

  it("refuses a registration after stop, so a resource cannot leak unnoticed", async () => {
    const { lifecycle } = recordingLifecycle();
    await lifecycle.stop();

    expect(() => lifecycle.defer("late server", () => undefined)).toThrow(/has stopped/);
  });
});
