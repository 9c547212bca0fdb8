import { BlockList, isIPv4, isIPv6 } from "node:net";

/** Decides whether the broker may open a connection to one resolved IP address. */
export interface AddressGuard {
  /** Returns why the address is refused, or undefined when it may be dialled. */
  refusalReason(address: string): string | undefined;
}

export interface AddressGuardOptions {
  /** 127/8 and ::1 become reachable. Dev and test only: the registry refuses it in production. */
  readonly allowLoopback: boolean;
}

// IANA special-purpose IPv4 space that is not globally reachable, plus the ranges the SSRF
// rule names explicitly. Anything here is internal, reserved or cannot be a real API server.
const BLOCKED_V4: ReadonlyArray<readonly [string, number]> = [
  ["0.0.0.0", 8], // "this network"; 0.0.0.0 reaches the local host on Linux
  ["10.0.0.0", 8],
  ["100.64.0.0", 10], // carrier-grade NAT
  ["169.254.0.0", 16], // link-local, cloud metadata (169.254.169.254)
  ["172.16.0.0", 12],
  ["192.0.0.0", 24], // IETF protocol assignments
  ["192.0.2.0", 24], // TEST-NET-1
  ["192.88.99.0", 24], // deprecated 6to4 relay anycast
  ["192.168.0.0", 16],
  ["198.18.0.0", 15], // benchmarking
  ["198.51.100.0", 24], // TEST-NET-2
  ["203.0.113.0", 24], // TEST-NET-3
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, includes 255.255.255.255
];

// IPv6 ranges refused outright. Ranges that embed an IPv4 address (mapped, NAT64, 6to4,
// Teredo) are not listed here: they are unpacked and the embedded address is judged by the
// IPv4 rules, so `::ffff:169.254.169.254` is refused for the same reason as the bare address.
const BLOCKED_V6: ReadonlyArray<readonly [string, number]> = [
  ["::", 96], // unspecified, loopback (handled first) and deprecated IPv4-compatible
  ["::ffff:0:0:0", 96], // SIIT IPv4-translated
  ["64:ff9b:1::", 48], // local-use NAT64: translates into private networks by design
  ["100::", 64], // discard-only
  ["2001::", 23], // IETF protocol assignments (Teredo inside it is unpacked before this list)
  ["2001:db8::", 32], // documentation
  ["3fff::", 20], // documentation
  ["5f00::", 16], // SRv6 SIDs
  ["fc00::", 7], // unique local
  ["fe80::", 10], // link-local
  ["fec0::", 10], // deprecated site-local
  ["ff00::", 8], // multicast
];

const LOOPBACK_V4: readonly [string, number] = ["127.0.0.0", 8];

/**
 * Builds the connect-time address check (SSRF guard, invariant I2, catalogue C26). It runs on
 * every address a hostname resolves to and on literal IPs, immediately before the socket is
 * opened to that exact address.
 */
export function createAddressGuard(options: AddressGuardOptions): AddressGuard {
  const v4 = new BlockList();
  for (const [net, prefix] of BLOCKED_V4) v4.addSubnet(net, prefix, "ipv4");
  if (!options.allowLoopback) v4.addSubnet(LOOPBACK_V4[0], LOOPBACK_V4[1], "ipv4");

  const v6 = new BlockList();
  for (const [net, prefix] of BLOCKED_V6) v6.addSubnet(net, prefix, "ipv6");

  const checkV4 = (address: string): string | undefined =>
    v4.check(address, "ipv4") ? "address is in a blocked IPv4 range" : undefined;

  return {
    refusalReason(raw: string): string | undefined {
      const ip = parseIpLiteral(raw);
      if (ip === undefined) return "not an IP address";
      if (ip.family === 4) return checkV4(ip.address);

      const bytes = ip.bytes;
      if (isV6Loopback(bytes)) return options.allowLoopback ? undefined : "address is IPv6 loopback";
      const embedded = embeddedIpv4(bytes);
      if (embedded !== undefined) {
        for (const inner of embedded) {
          const reason = checkV4(inner);
          if (reason !== undefined) return `embedded IPv4: ${reason}`;
        }
        return undefined;
      }
      return v6.check(ip.address, "ipv6") ? "address is in a blocked IPv6 range" : undefined;
    },
  };
}

/** A parsed IP literal in canonical form. */
export type IpLiteral =
  | { readonly family: 4; readonly address: string }
  | { readonly family: 6; readonly address: string; readonly bytes: Uint8Array };

/**
 * Parses an IP literal the way getaddrinfo/inet_aton would, so every spelling of an address is
 * judged as the address it really is: IPv4 in 1–4 parts with decimal, octal (leading 0) or hex
 * (0x) parts (`2130706433`, `0x7f.1`, `0177.0.0.1`), and IPv6 with or without brackets.
 * Returns undefined for anything that is not an IP literal (a hostname). IPv6 zone ids
 * (`fe80::1%eth0`) are not accepted: they only ever name link-local interfaces.
 */
export function parseIpLiteral(raw: string): IpLiteral | undefined {
  const host = raw.startsWith("[") && raw.endsWith("]") ? raw.slice(1, -1) : raw;
  if (host.includes(":")) {
    if (host.includes("%") || !isIPv6(host)) return undefined;
    const bytes = ipv6ToBytes(host);
    return { family: 6, address: bytesToIpv6(bytes), bytes };
  }
  const v4 = parseInetAton(host);
  return v4 === undefined ? undefined : { family: 4, address: v4 };
}

function parseInetAton(host: string): string | undefined {
  if (isIPv4(host)) return host;
  const parts = host.split(".");
  if (parts.length < 1 || parts.length > 4) return undefined;
  const values: number[] = [];
  for (const part of parts) {
    let value: number;
    if (/^0x[0-9a-f]*$/i.test(part)) value = part.length === 2 ? 0 : Number.parseInt(part.slice(2), 16);
    else if (/^0[0-7]+$/.test(part)) value = Number.parseInt(part.slice(1), 8);
    else if (/^(0|[1-9][0-9]*)$/.test(part)) value = Number.parseInt(part, 10);
    else return undefined;
    values.push(value);
  }
  // The last part fills all remaining bytes: a.b.c.d, a.b.(16 bits), a.(24 bits), (32 bits).
  const last = values[values.length - 1] ?? 0;
  const leading = values.slice(0, -1);
  if (leading.some((v) => v > 255)) return undefined;
  const lastBits = 8 * (4 - leading.length);
  if (last >= 2 ** lastBits) return undefined;
  let n = 0;
  for (const v of leading) n = n * 256 + v;
  n = n * 2 ** lastBits + last;
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

function ipv6ToBytes(address: string): Uint8Array {
  let text = address;
  const words: number[] = [];
  // An IPv4 tail (::ffff:1.2.3.4) becomes two 16-bit words.
  const lastColon = text.lastIndexOf(":");
  const tail = text.slice(lastColon + 1);
  let tailWords: number[] = [];
  if (tail.includes(".")) {
    const octets = tail.split(".").map((p) => Number.parseInt(p, 10));
    tailWords = [((octets[0] ?? 0) << 8) | (octets[1] ?? 0), ((octets[2] ?? 0) << 8) | (octets[3] ?? 0)];
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head = "", rest] = text.split("::");
  const headWords = head === "" ? [] : head.split(":");
  const restWords = rest === undefined || rest === "" ? [] : rest.split(":");
  const missing = 8 - headWords.length - restWords.length;
  for (const w of headWords) words.push(Number.parseInt(w, 16));
  if (rest !== undefined) for (let i = 0; i < missing; i++) words.push(0);
  for (const w of restWords) words.push(Number.parseInt(w, 16));
  if (tailWords.length === 2) words.splice(6, 2, tailWords[0] ?? 0, tailWords[1] ?? 0);
  const bytes = new Uint8Array(16);
  words.forEach((w, i) => {
    bytes[2 * i] = w >>> 8;
    bytes[2 * i + 1] = w & 255;
  });
  return bytes;
}

function bytesToIpv6(bytes: Uint8Array): string {
  const words: string[] = [];
  for (let i = 0; i < 16; i += 2) words.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  return words.join(":");
}

function isV6Loopback(bytes: Uint8Array): boolean {
  return bytes.every((b, i) => (i === 15 ? b === 1 : b === 0));
}

function v4At(bytes: Uint8Array, offset: number, xor = 0): string {
  return [0, 1, 2, 3].map((i) => ((bytes[offset + i] ?? 0) ^ xor) & 255).join(".");
}

function startsWith(bytes: Uint8Array, prefix: readonly number[]): boolean {
  return prefix.every((b, i) => bytes[i] === b);
}

/** IPv4 addresses carried inside an IPv6 address, or undefined when none is embedded. */
function embeddedIpv4(bytes: Uint8Array): string[] | undefined {
  // ::ffff:0:0/96 — IPv4-mapped: the kernel dials the IPv4 address itself.
  if (startsWith(bytes, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff])) return [v4At(bytes, 12)];
  // 64:ff9b::/96 — well-known NAT64 prefix: the translator dials the embedded address.
  if (startsWith(bytes, [0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0])) return [v4At(bytes, 12)];
  // 2002::/16 — 6to4: bits 16..47 are the IPv4 address of the tunnel end.
  if (startsWith(bytes, [0x20, 0x02])) return [v4At(bytes, 2)];
  // 2001:0::/32 — Teredo: server IPv4 in bits 32..63, client IPv4 inverted in the last 32 bits.
  if (startsWith(bytes, [0x20, 0x01, 0, 0])) return [v4At(bytes, 4), v4At(bytes, 12, 0xff)];
  return undefined;
}
