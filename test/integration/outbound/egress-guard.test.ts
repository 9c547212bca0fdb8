import type { Socket } from "node:net";
import { Client } from "undici";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { isBrokerError } from "../../../src/errors.js";
import {
  createGuardedConnector,
  type DialTarget,
  defaultDialer,
} from "../../../src/outbound/guarded-connector.js";
import { createOutboundClient } from "../../../src/outbound/outbound-client.js";
import { parseProviderRegistry } from "../../../src/outbound/provider-registry.js";
import { expectBrokerError } from "../../support/broker-errors.js";
import {
  canaryCredentials,
  type HttpsUpstream,
  startHttpsUpstream,
  UPSTREAM_HOST,
} from "../../support/https-upstream.js";
import { captureLogs, fakeResolver, rejectionOf, request, upstreamProviders } from "./upstream-fixture.js";

// The SSRF guard lives in the connector of the HTTP client actually used (C29): these tests go
// through undici and a real HTTPS server, with DNS answers supplied by a fake resolver.

const creds = canaryCredentials();
let upstream: HttpsUpstream;
const closers: Array<() => Promise<void>> = [];

beforeAll(async () => {
  upstream = await startHttpsUpstream(creds);
});
afterEach(async () => {
  for (const close of closers.splice(0)) await close();
  upstream.reset();
});
afterAll(async () => {
  await upstream.close();
});

function clientWith(table: Record<string, string[]>, extraProviders: Record<string, unknown>[] = []) {
  const registry = parseProviderRegistry(
    { providers: [...upstreamProviders(upstream.port), ...extraProviders] },
    { production: false },
  );
  const dns = fakeResolver(table);
  const dialled: DialTarget[] = [];
  const client = createOutboundClient({
    registry,
    resolve: dns.resolve,
    ca: upstream.ca,
    logger: captureLogs().logger,
    dial: (target) => {
      dialled.push(target);
      return defaultDialer(target);
    },
  });
  closers.push(() => client.close());
  return { client, lookups: dns.lookups, dialled };
}

const signal = () => new AbortController().signal;

describe("C26 addresses are checked at connect time, after DNS", () => {
  it.each([
    ["127.0.0.1"],
    ["10.0.0.1"],
    ["::ffff:127.0.0.1"],
    ["::1"],
    ["169.254.169.254"],
    ["::ffff:169.254.169.254"],
    ["64:ff9b::7f00:1"],
    ["2002:a9fe:a9fe::"],
    ["100.64.0.1"],
    ["172.16.5.4"],
    ["192.168.1.1"],
    ["fd00::1"],
    ["fe80::1"],
    ["0.0.0.0"],
  ])(
    "C26 refuses a provider without allowLoopback whose DNS answers %s, with zero connections",
    async (address) => {
      const { client, lookups, dialled } = clientWith({ [UPSTREAM_HOST]: [address] });
      const err = await expectBrokerError(
        client.call(request(creds, "up-no-loopback"), signal()),
        "permission_denied",
      );
      expect(err.message).toBe("upstream address is not allowed");
      expect(lookups).toEqual([UPSTREAM_HOST]);
      expect(dialled).toHaveLength(0);
      expect(upstream.connections()).toBe(0);
      expect(upstream.requests).toHaveLength(0);
    },
  );

  it("C26 refuses when ANY answer is internal, even if the first one is public", async () => {
    const { client, dialled } = clientWith({ [UPSTREAM_HOST]: ["93.184.216.34", "127.0.0.1"] });
    await expectBrokerError(client.call(request(creds, "up-no-loopback"), signal()), "permission_denied");
    expect(dialled).toHaveLength(0);
    expect(upstream.connections()).toBe(0);
  });

  it("C29 checks literal IPs, which never pass through a DNS hook", async () => {
    const literal = {
      ...upstreamProviders(upstream.port)[0],
      id: "literal-ip",
      baseUrl: `https://127.0.0.1:${upstream.port}/bearer`,
      allowedHosts: ["127.0.0.1"],
      allowLoopback: false,
    };
    const { client, lookups } = clientWith({}, [literal]);
    await expectBrokerError(client.call(request(creds, "literal-ip"), signal()), "permission_denied");
    expect(lookups).toHaveLength(0);
    expect(upstream.connections()).toBe(0);
  });

  it.each([["0x7f.1"], ["2130706433"], ["0177.0.0.1"], ["127.1"], ["[::ffff:7f00:1]"]])(
    "C26 blocks %s at connect time without resolving it",
    async (host) => {
      const dns = fakeResolver({});
      const dialled: DialTarget[] = [];
      const connect = createGuardedConnector({
        allowedHosts: [host],
        allowLoopback: false,
        resolve: dns.resolve,
        connectTimeoutMs: 1000,
        dial: (t) => {
          dialled.push(t);
          return defaultDialer(t);
        },
      });
      const err = await new Promise<Error | null>((resolve) =>
        connect({ hostname: host, protocol: "https:", port: String(upstream.port) }, (...args) =>
          resolve(args[0]),
        ),
      );
      expect(isBrokerError(err) && err.code).toBe("permission_denied");
      expect(dns.lookups).toHaveLength(0);
      expect(dialled).toHaveLength(0);
      expect(upstream.connections()).toBe(0);
    },
  );

  it("allows loopback only for a provider that sets allowLoopback", async () => {
    const { client } = clientWith({ [UPSTREAM_HOST]: ["127.0.0.1"] });
    expect((await client.call(request(creds, "up-bearer"), signal())).status).toBe(200);
    await expectBrokerError(client.call(request(creds, "up-no-loopback"), signal()), "permission_denied");
  });
});

describe("C27 DNS rebinding", () => {
  it("C27 dials exactly the address it checked, resolving once per connection", async () => {
    // First answer is public, every later answer is loopback. A guard that resolves again to
    // connect would reach 127.0.0.1; ours dials the checked public address (the dialer then
    // carries the socket to the local upstream, since tests must not leave 127.0.0.1).
    let answers = 0;
    const lookups: string[] = [];
    const dialled: DialTarget[] = [];
    const connect = createGuardedConnector({
      allowedHosts: [UPSTREAM_HOST],
      allowLoopback: false,
      resolve: async (host) => {
        lookups.push(host);
        answers += 1;
        return [{ address: answers === 1 ? "93.184.216.34" : "127.0.0.1", family: 4 }];
      },
      ca: upstream.ca,
      connectTimeoutMs: 1000,
      dial: (target): Socket => {
        dialled.push(target);
        return defaultDialer({ ...target, address: "127.0.0.1" });
      },
    });
    const origin = `https://${UPSTREAM_HOST}:${upstream.port}`;
    const client = new Client(origin, { connect });
    closers.push(() => client.close());

    const res = await client.request({
      path: "/bearer/ok",
      method: "GET",
      headers: { authorization: `Bearer ${creds.bearer}` },
    });
    await res.body.text();
    expect(res.statusCode).toBe(200);
    expect(lookups).toEqual([UPSTREAM_HOST]);
    expect(dialled.map((t) => [t.address, t.servername])).toEqual([["93.184.216.34", UPSTREAM_HOST]]);
    // SNI carried the hostname, so the certificate was verified for it, not for the IP.
    expect(upstream.requests[0]?.servername).toBe(UPSTREAM_HOST);
  });

  it("C27 re-checks on every new connection: a later rebinding answer is refused", async () => {
    let answers = 0;
    const { resolve } = {
      resolve: async () => {
        answers += 1;
        return [{ address: answers === 1 ? "127.0.0.1" : "10.0.0.1", family: 4 }];
      },
    };
    const registry = parseProviderRegistry(
      { providers: upstreamProviders(upstream.port) },
      { production: false },
    );
    const client = createOutboundClient({ registry, resolve, ca: upstream.ca, logger: captureLogs().logger });
    closers.push(() => client.close());
    expect((await client.call(request(creds, "up-bearer"), signal())).status).toBe(200);
    // The reset route kills the connection, forcing a new connect (and a new lookup) next time.
    await rejectionOf(client.call(request(creds, "up-bearer", { path: "/reset" }), signal()));
    await expectBrokerError(client.call(request(creds, "up-bearer"), signal()), "permission_denied");
    expect(answers).toBe(3);
  });
});

describe("C23/C29 the client only ever reaches the provider's allowed hosts", () => {
  it.each([
    ["//evil.test/x"],
    ["/@evil.test"],
    ["https://evil.test/x"],
    ["/..%2f..%2fevil"],
    ["/x/../../admin"],
    ["\\\\evil.test\\x"],
    ["/x#@evil.test"],
  ])("C23 path %s never makes the client look up or contact another host", async (path) => {
    const { client, lookups } = clientWith({ [UPSTREAM_HOST]: ["127.0.0.1"], "evil.test": ["127.0.0.1"] });
    await expectBrokerError(client.call(request(creds, "up-bearer", { path }), signal()), "invalid_argument");
    expect(lookups).toHaveLength(0);
    expect(upstream.connections()).toBe(0);
  });

  it("C23 every lookup the client makes is for the provider's own host", async () => {
    const { client, lookups } = clientWith({ [UPSTREAM_HOST]: ["127.0.0.1"] });
    await client.call(request(creds, "up-bearer"), signal());
    await client.call(request(creds, "up-query"), signal());
    expect(new Set(lookups)).toEqual(new Set([UPSTREAM_HOST]));
  });

  it("C29 the connector itself refuses a host outside the allowlist", async () => {
    const dns = fakeResolver({ "evil.test": ["127.0.0.1"] });
    const connect = createGuardedConnector({
      allowedHosts: [UPSTREAM_HOST],
      allowLoopback: true,
      resolve: dns.resolve,
      connectTimeoutMs: 1000,
    });
    const client = new Client(`https://evil.test:${upstream.port}`, { connect });
    closers.push(() => client.close());
    const err = await rejectionOf(client.request({ path: "/bearer/ok", method: "GET" }));
    expect(isBrokerError(err) && err.code).toBe("permission_denied");
    expect(dns.lookups).toHaveLength(0);
    expect(upstream.connections()).toBe(0);
  });

  it("C29 the certificate is verified against the hostname even though the socket targets an IP", async () => {
    const other = {
      ...upstreamProviders(upstream.port)[0],
      id: "wrong-name",
      baseUrl: `https://wrong.upstream.test:${upstream.port}/bearer`,
      allowedHosts: ["wrong.upstream.test"],
    };
    const { client } = clientWith({ "wrong.upstream.test": ["127.0.0.1"] }, [other]);
    const err = await expectBrokerError(client.call(request(creds, "wrong-name"), signal()), "unavailable");
    expect(err.message).toBe("upstream TLS certificate could not be verified");
    expect(upstream.requests).toHaveLength(0);
  });
});
