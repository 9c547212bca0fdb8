import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isBrokerError } from "../../../src/errors.js";
import { type Fixture, rejectionOf, request, startFixture } from "./upstream-fixture.js";

// End to end against a real HTTPS upstream whose routes verify each scheme the way the vendor
// does: a 200 means the broker injected (and signed) exactly what the vendor expects.

let f: Fixture;
const signal = () => new AbortController().signal;

beforeAll(async () => {
  f = await startFixture();
});
afterAll(async () => {
  await f.close();
});

describe("auth schemes end to end", () => {
  it.each(["up-bearer", "up-header", "up-query", "up-basic", "up-facebook"])(
    "%s: the upstream verifies the injected credential",
    async (providerId) => {
      const res = await f.client.call(request(f.creds, providerId, { query: [["page", "2"]] }), signal());
      expect(res.status).toBe(200);
      expect(JSON.parse(res.body.toString())).toEqual({ ok: true, method: "GET" });
    },
  );

  it("binance: signs the exact query string plus body with the timestamp and appends the signature last", async () => {
    const res = await f.client.call(
      request(f.creds, "up-binance", {
        method: "POST",
        path: "/api/v3/ok",
        query: [
          ["symbol", "LTCBTC"],
          ["side", "BUY"],
        ],
        headers: [["content-type", "application/x-www-form-urlencoded"]],
        body: Buffer.from("quantity=1&price=0.1"),
      }),
      signal(),
    );
    expect(res.status).toBe(200);
    const sent = f.upstream.requests.at(-1);
    expect(sent?.url).toMatch(
      /^\/binance\/api\/v3\/ok\?symbol=LTCBTC&side=BUY&timestamp=\d{13}&signature=[0-9a-f]{64}$/,
    );
    expect(sent?.body.toString()).toBe("quantity=1&price=0.1");
  });

  it("kraken: puts the nonce first in the form body and signs path + SHA256(nonce + body)", async () => {
    const res = await f.client.call(
      request(f.creds, "up-kraken", {
        method: "POST",
        path: "/0/private/ok",
        body: Buffer.from("ordertype=limit&pair=XBTUSD"),
      }),
      signal(),
    );
    expect(res.status).toBe(200);
    const sent = f.upstream.requests.at(-1);
    expect(sent?.body.toString()).toMatch(/^nonce=\d{16}&ordertype=limit&pair=XBTUSD$/);
    expect(sent?.headers["content-type"]).toBe("application/x-www-form-urlencoded");
  });

  it("coinbase exchange: signs timestamp + method + path?query + body with the decoded secret", async () => {
    const res = await f.client.call(
      request(f.creds, "up-coinbase", {
        method: "POST",
        path: "/orders/ok",
        query: [["profile", "default"]],
        headers: [["content-type", "application/json"]],
        body: Buffer.from('{"size":"1.0","side":"buy"}'),
      }),
      signal(),
    );
    expect(res.status).toBe(200);
  });

  it("sends the credential headers after every caller header", async () => {
    await f.client.call(request(f.creds, "up-bearer", { headers: [["x-trace", "abc"]] }), signal());
    const sent = f.upstream.requests.at(-1);
    const names = Object.keys(sent?.headers ?? {});
    expect(names.indexOf("authorization")).toBeGreaterThan(names.indexOf("x-trace"));
    expect(sent?.headers["accept-encoding"]).toBe("identity");
  });

  it("answers failed_precondition when a required field is missing, with no traffic", async () => {
    f.upstream.reset();
    const err = await rejectionOf(
      f.client.call(
        request(f.creds, "up-kraken", { method: "POST", path: "/0/private/ok", fields: new Map() }),
        signal(),
      ),
    );
    expect(isBrokerError(err) && err.code).toBe("failed_precondition");
    expect(f.upstream.requests).toHaveLength(0);
  });

  it("refuses a stored secret containing CR/LF instead of splitting the request", async () => {
    f.upstream.reset();
    const fields = new Map([["token", Buffer.from("abc\r\nx-injected: 1")]]);
    const err = await rejectionOf(f.client.call(request(f.creds, "up-bearer", { fields }), signal()));
    expect(isBrokerError(err) && err.code).toBe("failed_precondition");
    expect(f.upstream.requests).toHaveLength(0);
  });

  // Every call is a real TLS exchange: the patient provider's timeout leaves room for a loaded
  // 2-core CI machine; nonce-source.test.ts covers larger counts in memory.
  it("keeps nonces strictly increasing across 250 concurrent calls on one secret", {
    timeout: 60_000,
  }, async () => {
    f.upstream.reset();
    const calls = Array.from({ length: 250 }, () =>
      f.client.call(
        request(f.creds, "up-kraken-patient", { method: "POST", path: "/0/private/ok" }),
        signal(),
      ),
    );
    const results = await Promise.all(calls);
    expect(results.every((r) => r.status === 200)).toBe(true);
    const nonces = f.upstream.krakenNonces.map(BigInt);
    expect(nonces).toHaveLength(250);
    expect(new Set(nonces.map(String)).size).toBe(250);
    // Arrival order may differ across pooled connections; the assigned sequence may not repeat.
    const sorted = [...nonces].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (let i = 1; i < sorted.length; i++) expect((sorted[i] ?? 0n) > (sorted[i - 1] ?? 0n)).toBe(true);
  });
});
