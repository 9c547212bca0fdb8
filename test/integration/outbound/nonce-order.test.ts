import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isBrokerError } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import { createOutboundClient } from "../../../src/outbound/outbound-client.js";
import { type Fixture, rejectionOf, request, startFixture } from "./upstream-fixture.js";

// F1: the upstream's "/nonce-strict" route refuses, as Kraken does, any nonce not above the last
// one it accepted. Nonces that merely increase when planned are not enough: they must ARRIVE in
// order, so a secret's nonce-signing requests are sent one turn at a time.

let f: Fixture;
const signal = () => new AbortController().signal;

beforeAll(async () => {
  f = await startFixture();
});
afterAll(async () => {
  await f.close();
});

const strictCall = (secretId = "secret-up-kraken") =>
  request(f.creds, "up-kraken-patient", { method: "POST", path: "/0/private/nonce-strict", secretId });

describe("F1 nonce-signing requests reach the upstream in nonce order", () => {
  it("F1 accepts all of 24 concurrent Kraken calls on one secret at an upstream that enforces increasing nonces", {
    timeout: 30_000,
  }, async () => {
    f.upstream.reset();
    const results = await Promise.all(
      Array.from({ length: 24 }, () => f.client.call(strictCall(), signal())),
    );
    const errors = results.map((r) => (JSON.parse(r.body.toString()) as { error: string[] }).error);
    expect(errors.filter((e) => e.length > 0)).toEqual([]);
    const arrived = f.upstream.krakenNonces.map(BigInt);
    expect(arrived).toHaveLength(24);
    for (let i = 1; i < arrived.length; i++) expect((arrived[i] ?? 0n) > (arrived[i - 1] ?? 0n)).toBe(true);
  });

  it("F1 answers resource_exhausted, without sending, when a secret's queue is full", async () => {
    const client = createOutboundClient({
      registry: f.registry,
      logger: createLogger({ level: "silent" }),
      resolve: async () => [{ address: "127.0.0.1", family: 4 }],
      ca: f.upstream.ca,
      maxQueuedPerSecret: 2,
    });
    try {
      f.upstream.reset();
      // One in flight and two waiting fill the queue; the fourth and fifth are refused at once.
      const calls = Array.from({ length: 5 }, () => client.call(strictCall("secret-queue"), signal()));
      const settled = await Promise.allSettled(calls);
      const refused = settled.filter(
        (s) => s.status === "rejected" && isBrokerError(s.reason) && s.reason.code === "resource_exhausted",
      );
      expect(refused).toHaveLength(2);
      expect(settled.filter((s) => s.status === "fulfilled")).toHaveLength(3);
      expect(f.upstream.requests).toHaveLength(3);
    } finally {
      await client.close();
    }
  });

  it("F1 a call cancelled while waiting for its turn is never sent, and the queue moves on", async () => {
    f.upstream.reset();
    const hung = request(f.creds, "up-kraken", {
      method: "POST",
      path: "/0/private/hang",
      secretId: "secret-hang",
    });
    const first = new AbortController();
    const waiting = new AbortController();
    const held = f.client.call(hung, first.signal);
    const queued = f.client.call(strictCall("secret-hang"), waiting.signal);
    setTimeout(() => waiting.abort(), 100);
    const err = await rejectionOf(queued);
    expect(isBrokerError(err) && err.code).toBe("deadline_exceeded");
    expect(f.upstream.requests.filter((r) => r.url.endsWith("/nonce-strict"))).toHaveLength(0);
    first.abort();
    await rejectionOf(held);
    const next = await f.client.call(strictCall("secret-hang"), signal());
    expect(JSON.parse(next.body.toString())).toMatchObject({ error: [] });
  });
});
