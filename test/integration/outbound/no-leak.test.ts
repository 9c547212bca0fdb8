import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isBrokerError } from "../../../src/errors.js";
import {
  encodings,
  type Fixture,
  readAll,
  request,
  startFixture,
  upstreamProviders,
} from "./upstream-fixture.js";

// C32 and invariant I7: whatever happens on the wire, no secret value (in any common encoding)
// reaches a log line, an error message or an error cause — including the key of a provider
// that sends it as a query parameter, where the URL itself is secret.

let f: Fixture;
const outputs: string[] = [];

beforeAll(async () => {
  f = await startFixture({
    // The query-parameter scheme with a short deadline: its URL carries the key.
    extraProviders: (port) => [{ ...upstreamProviders(port)[2], id: "up-query-short", timeoutMs: 300 }],
  });
});
afterAll(async () => {
  await f.close();
});

/** Everything an error could expose: message, stack, and the whole cause chain. */
function errorText(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current !== undefined && current !== null; depth++) {
    if (current instanceof Error) {
      parts.push(current.message, current.stack ?? "", JSON.stringify(current));
      current = current.cause;
    } else {
      parts.push(String(current));
      current = undefined;
    }
  }
  return parts.join("\n");
}

async function run(providerId: string, path: string, method = "GET"): Promise<void> {
  const signal = new AbortController().signal;
  try {
    const res = await f.client.callStream(request(f.creds, providerId, { path, method }), signal);
    outputs.push((await readAll(res.body)).toString("latin1"), JSON.stringify(res.headers));
  } catch (err) {
    expect(isBrokerError(err)).toBe(true);
    outputs.push(errorText(err));
  }
}

describe("C32 secrets never reach logs, errors or responses", () => {
  it("C32 a battery of good and failing calls on every scheme leaves no trace of any secret", async () => {
    const scenarios: Array<[string, string, string?]> = [];
    for (const id of [
      "up-bearer",
      "up-header",
      "up-query",
      "up-basic",
      "up-binance",
      "up-coinbase",
      "up-facebook",
    ]) {
      for (const path of ["/ok", "/echo", "/redirect-other-host", "/reset", "/huge", "/gzip-echo"]) {
        scenarios.push([id, path]);
      }
    }
    scenarios.push(["up-kraken", "/0/private/echo", "POST"], ["up-kraken", "/0/private/reset", "POST"]);
    scenarios.push(["up-query-short", "/hang"], ["up-short", "/slow-drip"], ["up-short", "/hang", "POST"]);
    scenarios.push(
      ["up-bearer", "/../escape"],
      ["up-strict", "/not-allowed"],
      ["up-strict", "/ok", "DELETE"],
    );
    for (const [id, path, method] of scenarios) await run(id, path, method);

    const haystack = [...outputs, ...f.logs].join("\n");
    expect(f.logs.length).toBeGreaterThan(scenarios.length / 2);
    for (const canary of f.canaries) {
      for (const form of encodings(canary)) expect(haystack).not.toContain(form);
    }
  });

  it("C32 a timed-out call on a query-parameter key reports no URL or key", async () => {
    const signal = new AbortController().signal;
    const fields = new Map([["key", Buffer.from(f.creds.queryKey)]]);
    let caught: unknown;
    try {
      await f.client.call(request(f.creds, "up-query-short", { path: "/hang", fields }), signal);
    } catch (err) {
      caught = err;
    }
    const text = errorText(caught);
    expect(isBrokerError(caught) && caught.code).toBe("deadline_exceeded");
    expect(text).not.toContain("/query/hang");
    expect(text).not.toContain("api_key=");
    expect(text).not.toContain(f.creds.queryKey);
  });

  it("C32 log lines name the provider and outcome but never the path, query or headers", () => {
    const lines = f.logs.map((l) => JSON.parse(l) as Record<string, unknown>);
    const finished = lines.find((l) => l.msg === "outbound call finished");
    expect(finished).toMatchObject({ provider: expect.any(String), method: expect.any(String), status: 200 });
    for (const line of lines) {
      expect(Object.keys(line)).not.toContain("url");
      expect(Object.keys(line)).not.toContain("headers");
      expect(Object.keys(line)).not.toContain("path");
    }
  });
});
