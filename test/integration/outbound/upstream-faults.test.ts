import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { BrokerError as BrokerErrorClass } from "../../../src/errors.js";
import { expectBrokerError } from "../../support/broker-errors.js";
import { type Fixture, readAll, request, startFixture } from "./upstream-fixture.js";

// Hostile and broken upstreams: redirects (C28), echoed secrets (C31), size and time abuse
// (C33), non-idempotent timeouts (C35), cancellation, resets and unreachable hosts.

let f: Fixture;
const signal = () => new AbortController().signal;

beforeAll(async () => {
  f = await startFixture();
});
afterEach(() => {
  f.upstream.reset();
});
afterAll(async () => {
  await f.close();
});

function header(headers: Array<[string, string]>, name: string): string | undefined {
  return headers.find(([n]) => n === name)?.[1];
}

describe("C28 redirects are returned, never followed", () => {
  it("C28 hands a 302 to 169.254.169.254 back to the caller without following it", async () => {
    const res = await f.client.call(request(f.creds, "up-bearer", { path: "/redirect-metadata" }), signal());
    expect(res.status).toBe(302);
    expect(header(res.headers, "location")).toBe(
      "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    );
    expect(f.upstream.requests).toHaveLength(1);
    expect(f.lookups.every((h) => h === "api.upstream.test")).toBe(true);
  });

  it("C28 scrubs the key out of a Location pointing at another host and never re-sends credentials", async () => {
    const res = await f.client.call(
      request(f.creds, "up-bearer", { path: "/redirect-other-host" }),
      signal(),
    );
    expect(res.status).toBe(302);
    expect(header(res.headers, "location")).toBe("https://evil.test/collect?stolen=[REDACTED]");
    expect(f.upstream.requests).toHaveLength(1);
  });

  it("C28 does not follow a downgrade to http", async () => {
    const res = await f.client.call(request(f.creds, "up-bearer", { path: "/redirect-http" }), signal());
    expect(res.status).toBe(301);
    expect(f.upstream.requests).toHaveLength(1);
  });
});

describe("C31 echoed secrets are scrubbed", () => {
  it.each(["up-bearer", "up-header", "up-query", "up-basic", "up-facebook", "up-binance"])(
    "C31 %s: raw, base64, base64url, hex, HEX and URL-encoded echoes are all redacted",
    async (providerId) => {
      const res = await f.client.call(request(f.creds, providerId, { path: "/echo" }), signal());
      expect(res.status).toBe(200);
      const text = res.body.toString("latin1") + JSON.stringify(res.headers);
      for (const canary of f.canaries) {
        const b = Buffer.from(canary);
        for (const form of [canary, b.toString("base64"), b.toString("base64url"), b.toString("hex")]) {
          expect(text).not.toContain(form);
        }
        expect(text).not.toContain(b.toString("hex").toUpperCase());
        expect(text).not.toContain(encodeURIComponent(canary));
      }
      const body = JSON.parse(res.body.toString()) as Record<string, string>;
      expect(body.raw).toBe("[REDACTED]");
      expect(body.hex).toBe("[REDACTED]");
      expect(header(res.headers, "x-echo-raw")).toBe("[REDACTED]");
    },
  );

  it("C31 scrubs a secret embedded inside a longer base64 value", async () => {
    const res = await f.client.call(request(f.creds, "up-bearer", { path: "/echo" }), signal());
    const embedded = (JSON.parse(res.body.toString()) as { embedded: string }).embedded;
    const decoded = Buffer.from(embedded.replace(/\[REDACTED\]/g, ""), "base64").toString("latin1");
    expect(embedded).toContain("[REDACTED]");
    expect(decoded).not.toContain(f.creds.bearer.slice(0, 12));
  });

  it("C31 scrubs a secret the upstream drips across many small chunks, in the streaming call", async () => {
    const res = await f.client.callStream(request(f.creds, "up-bearer", { path: "/echo-chunked" }), signal());
    const text = (await readAll(res.body)).toString();
    expect(text).toBe("start [REDACTED] middle [REDACTED] end");
  });

  it("C31 decodes a gzip body the upstream sent anyway, scrubs it and drops content-encoding", async () => {
    const res = await f.client.call(request(f.creds, "up-bearer", { path: "/gzip-echo" }), signal());
    expect(res.body.toString()).toBe("compressed [REDACTED] body");
    expect(header(res.headers, "content-encoding")).toBeUndefined();
  });
});

describe("content-encoding edge cases", () => {
  it("answers a HEAD whose headers name gzip with an empty body instead of a decode error", async () => {
    const res = await f.client.call(
      request(f.creds, "up-bearer", { method: "HEAD", path: "/gzip-echo" }),
      signal(),
    );
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(0);
  });

  it("reports a body that claims gzip but is not as unavailable", async () => {
    const err = await expectBrokerError(
      f.client.call(request(f.creds, "up-bearer", { path: "/gzip-corrupt" }), signal()),
      "unavailable",
    );
    expect(err.message).toBe("upstream sent a body that could not be decoded");
  });
});

describe("C33 size and time are capped", () => {
  it("C33 stops an endless body at maxResponseBytes with resource_exhausted", async () => {
    await expectBrokerError(
      f.client.call(request(f.creds, "up-bearer", { path: "/huge" }), signal()),
      "resource_exhausted",
    );
  });

  it("C33 refuses a declared 1 GB body before reading it", async () => {
    const started = Date.now();
    await expectBrokerError(
      f.client.call(request(f.creds, "up-bearer", { path: "/huge-declared" }), signal()),
      "resource_exhausted",
    );
    expect(Date.now() - started).toBeLessThan(1000);
  });

  it("C33 caps a gzip bomb (16 KiB inflating to 16 MiB) on its DECODED size", async () => {
    // How far decoding gets before the cap is measured in test/unit/outbound/response-body.test.ts.
    const err = await expectBrokerError(
      f.client.call(request(f.creds, "up-bearer", { path: "/gzip-bomb" }), signal()),
      "resource_exhausted",
    );
    expect(err.message).toBe("upstream response is larger than this provider allows");
  });

  it("C33 ends a slow drip at the provider timeout with deadline_exceeded", async () => {
    const started = Date.now();
    const err = await expectBrokerError(
      f.client.call(request(f.creds, "up-short", { path: "/slow-drip" }), signal()),
      "deadline_exceeded",
    );
    expect(err.message).toBe("upstream did not answer in time");
    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("C33 applies the same caps to the streaming call", async () => {
    const res = await f.client.callStream(request(f.creds, "up-bearer", { path: "/huge" }), signal());
    await expectBrokerError(readAll(res.body), "resource_exhausted");
  });
});

describe("C35 non-idempotent calls are never retried", () => {
  it("C35 a POST that times out is sent once and reported as outcome unknown", async () => {
    const err = await expectBrokerError(
      f.client.call(
        request(f.creds, "up-short", { method: "POST", path: "/hang", body: Buffer.from("{}") }),
        signal(),
      ),
      "deadline_exceeded",
    );
    expect(err.message).toBe(
      "upstream did not answer in time; upstream outcome unknown; the request was not retried",
    );
    expect(f.upstream.requests.filter((r) => r.method === "POST")).toHaveLength(1);
  });

  it("C35 a PATCH whose connection is reset is sent once and reported as outcome unknown", async () => {
    const err = await expectBrokerError(
      f.client.call(request(f.creds, "up-bearer", { method: "PATCH", path: "/reset" }), signal()),
      "unavailable",
    );
    expect(err.message).toContain("upstream outcome unknown; the request was not retried");
    expect(f.upstream.requests).toHaveLength(1);
  });

  it("C35 a 504 on a POST is returned as is, sent once", async () => {
    const res = await f.client.call(
      request(f.creds, "up-bearer", { method: "POST", path: "/status-504" }),
      signal(),
    );
    expect(res.status).toBe(504);
    expect(f.upstream.requests).toHaveLength(1);
  });
});

describe("cancellation and unreachable upstreams", () => {
  it("F52 aborts the upstream request when the caller's signal fires", async () => {
    const controller = new AbortController();
    const pending = f.client.call(request(f.creds, "up-bearer", { path: "/hang" }), controller.signal);
    await waitFor(() => f.upstream.requests.length === 1);
    controller.abort();
    const err = await expectBrokerError(pending, "deadline_exceeded");
    expect(err.message).toBe("call was cancelled");
  });

  it("passes a BrokerError abort reason through (e.g. server shutting down)", async () => {
    const controller = new AbortController();
    const pending = f.client.call(request(f.creds, "up-bearer", { path: "/hang" }), controller.signal);
    await waitFor(() => f.upstream.requests.length === 1);
    controller.abort(new BrokerErrorClass("unavailable", "server is shutting down"));
    const err = await expectBrokerError(pending, "unavailable");
    expect(err.message).toBe("server is shutting down");
  });

  it("sends nothing when the signal is already aborted", async () => {
    const controller = new AbortController();
    controller.abort();
    await expectBrokerError(
      f.client.call(request(f.creds, "up-bearer"), controller.signal),
      "deadline_exceeded",
    );
    expect(f.upstream.requests).toHaveLength(0);
  });

  it("aborts the upstream when a stream consumer stops early", async () => {
    const res = await f.client.callStream(request(f.creds, "up-bearer", { path: "/huge" }), signal());
    for await (const chunk of res.body) {
      expect(chunk.length).toBeGreaterThan(0);
      break;
    }
    await waitFor(() => f.upstream.abandonedResponses() === 1);
    const ok = await f.client.call(request(f.creds, "up-bearer"), signal());
    expect(ok.status).toBe(200);
  });

  it("reports unavailable when the upstream resets the connection on a GET", async () => {
    const err = await expectBrokerError(
      f.client.call(request(f.creds, "up-bearer", { path: "/reset" }), signal()),
      "unavailable",
    );
    expect(err.message).toBe("upstream connection failed");
  });

  it("reports unavailable when nothing listens on the upstream port", async () => {
    const closed = await startFixture();
    await closed.upstream.close();
    const err = await expectBrokerError(
      closed.client.call(request(closed.creds, "up-bearer"), signal()),
      "unavailable",
    );
    expect(err.message).toBe("upstream is unreachable");
    await closed.client.close();
  });

  it("refuses calls after close()", async () => {
    const other = await startFixture();
    await other.close();
    await expectBrokerError(other.client.call(request(other.creds, "up-bearer"), signal()), "unavailable");
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !condition(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(condition()).toBe(true);
}
