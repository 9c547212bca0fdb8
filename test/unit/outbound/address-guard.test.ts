import { describe, expect, it } from "vitest";
import { createAddressGuard, parseIpLiteral } from "../../../src/outbound/address-guard.js";

const strict = createAddressGuard({ allowLoopback: false });
const dev = createAddressGuard({ allowLoopback: true });

describe("address guard (C26)", () => {
  it.each([
    "127.0.0.1",
    "127.255.255.254",
    "2130706433",
    "0x7f.1",
    "0177.0.0.1",
    "127.1",
    "0.0.0.0",
    "0",
    "10.0.0.1",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "192.0.2.1",
    "198.18.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "[::1]",
    "::ffff:7f00:1",
    "[::ffff:7f00:1]",
    "::ffff:127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:10.1.2.3",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::1",
    "2002:a9fe:a9fe::",
    "2002:7f00:1::1",
    "2001:0:a9fe:a9fe::1",
    "2001:0:5db8:1::5601:fefe",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "febf::1",
    "ff02::1",
    "2001:db8::1",
    "::127.0.0.1",
  ])("C26 blocks %s", (address) => {
    expect(strict.refusalReason(address)).toBeDefined();
  });

  it.each([
    "93.184.216.34",
    "140.82.112.6",
    "8.8.8.8",
    "172.32.0.1",
    "100.128.0.1",
    "2606:4700::6810:84e5",
    "2002:5db8:d822::1",
    "64:ff9b::5db8:d822",
  ])("allows the public address %s", (address) => {
    expect(strict.refusalReason(address)).toBeUndefined();
  });

  it("allows loopback only when the provider opts in, and nothing else private", () => {
    expect(dev.refusalReason("127.0.0.1")).toBeUndefined();
    expect(dev.refusalReason("::1")).toBeUndefined();
    expect(dev.refusalReason("::ffff:127.0.0.1")).toBeUndefined();
    expect(dev.refusalReason("10.0.0.1")).toBeDefined();
    expect(dev.refusalReason("169.254.169.254")).toBeDefined();
    expect(dev.refusalReason("::ffff:169.254.169.254")).toBeDefined();
  });

  it("refuses hostnames and zone-scoped addresses outright (only checked IPs may be dialled)", () => {
    expect(strict.refusalReason("api.github.com")).toBe("not an IP address");
    expect(strict.refusalReason("fe80::1%eth0")).toBe("not an IP address");
    expect(strict.refusalReason("")).toBe("not an IP address");
  });
});

describe("IP literal parsing", () => {
  it.each([
    ["2130706433", "127.0.0.1"],
    ["0x7f.1", "127.0.0.1"],
    ["0177.0.0.1", "127.0.0.1"],
    ["0x7f.0.0.1", "127.0.0.1"],
    ["127.1", "127.0.0.1"],
    ["10.1.258", "10.1.1.2"],
    ["0xa9fea9fe", "169.254.169.254"],
  ])("reads the inet_aton form %s as %s", (raw, address) => {
    expect(parseIpLiteral(raw)).toEqual({ family: 4, address });
  });

  it.each(["api.github.com", "1.2.3.4.5", "256.1.1.1", "0x1g.1", "09.1.1.1", "1.2.3.", "example.123"])(
    "treats %s as not an IPv4 literal",
    (raw) => {
      expect(parseIpLiteral(raw)).toBeUndefined();
    },
  );

  it("canonicalises IPv6, including an embedded IPv4 tail", () => {
    expect(parseIpLiteral("[::ffff:127.0.0.1]")?.address).toBe("0:0:0:0:0:ffff:7f00:1");
    expect(parseIpLiteral("64:ff9b::7f00:1")?.address).toBe("64:ff9b:0:0:0:0:7f00:1");
  });
});
