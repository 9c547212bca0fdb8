import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createAddressGuard } from "../../src/outbound/address-guard.js";
import { checkCallerPath, resolveUpstreamUrl } from "../../src/outbound/path-guard.js";

/**
 * Catalogue C24/C25/C26 as properties over generated input, on top of the example tables in
 * test/unit/outbound/{path,address}-guard.test.ts.
 */

// ---------------------------------------------------------------------------------------------
// Paths (C24, C25): the caller supplies only a path; whatever it is, the URL the broker would
// send to keeps the base URL's origin, stays under its base path, and is exactly base + path.

const BASES = [
  "https://api.example.com/v1",
  "https://api.example.com/v1/",
  "https://api.example.com",
  "https://api.example.com/a/b",
  "https://127.0.0.1:8443/base",
].map((b) => new URL(b));

// Fragments attackers use to move a request elsewhere: traversal (plain, encoded, double
// encoded, Tomcat/IIS forms), authority and scheme smuggling, backslashes, delimiters,
// control characters, and unicode look-alikes of '.', '/' and '@'.
const HOSTILE_PIECES = [
  "/",
  "//",
  ".",
  "..",
  "...",
  "..;",
  "%2e",
  "%2E",
  "%2e%2e",
  ".%2e",
  "%2f",
  "%2F",
  "%5c",
  "%5C",
  "%25",
  "%252e",
  "%252f",
  "%00",
  "%0d%0a",
  "%40",
  "%23",
  "%3f",
  "%3F",
  "%",
  "%zz",
  "%2",
  "%ae",
  "%A0",
  "%c3",
  "\\",
  "@",
  "#",
  "?",
  ":",
  ";",
  "&",
  "=",
  "+",
  "~",
  " ",
  "\t",
  "\r\n",
  "\u0000",
  "ü",
  "\u3002",
  "\uff0e",
  "\uff0f",
  "\u2215",
  "\u2044",
  "\uff20",
  "xn--80ak6aa92e.com",
  "a.com@evil.com",
  "evil.com",
  "http://evil.com/x",
  "https://evil.com",
  "//evil.com",
  "\\\\evil.com",
  "http:",
  "file:///etc/passwd",
  "localhost",
  "127.0.0.1",
  "[::1]",
  "v1",
  "admin",
  "a",
  "ok",
];

const piece = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...HOSTILE_PIECES) },
  { weight: 1, arbitrary: fc.string({ maxLength: 4 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 3 }) },
);

const callerPath = fc.oneof(
  { weight: 6, arbitrary: fc.array(piece, { maxLength: 12 }).map((parts) => parts.join("")) },
  { weight: 2, arbitrary: fc.array(piece, { maxLength: 10 }).map((parts) => `/${parts.join("")}`) },
  { weight: 1, arbitrary: fc.webPath() },
  { weight: 1, arbitrary: fc.webUrl({ withQueryParameters: true, withFragments: true }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
);

type Resolution = { readonly url: URL } | { readonly refused: unknown };

function resolve(base: URL, path: string): Resolution {
  try {
    return { url: resolveUpstreamUrl(base, checkCallerPath(path)) };
  } catch (err) {
    return { refused: err };
  }
}

const basePathOf = (base: URL) => (base.pathname.endsWith("/") ? base.pathname.slice(0, -1) : base.pathname);

describe("C24/C25 caller paths, as a property", () => {
  it("C25 never yields a URL off the base origin or outside the base path, whatever the path", () => {
    let accepted = 0;
    fc.assert(
      fc.property(fc.constantFrom(...BASES), callerPath, (base, path) => {
        const outcome = resolve(base, path);
        if ("refused" in outcome) {
          // Refusals are the caller's fault, reported as such (never a crash or INTERNAL).
          expect(outcome.refused).toMatchObject({ name: "BrokerError", code: "invalid_argument" });
          return;
        }
        accepted++;
        const { url } = outcome;
        const basePath = basePathOf(base);
        expect(url.origin).toBe(base.origin);
        // What was checked is what is sent: nothing normalised, re-encoded or dropped.
        expect(url.href).toBe(`${base.origin}${basePath}${path}`);
        expect(url.pathname.startsWith(`${basePath}/`)).toBe(true);
        expect([url.username, url.password, url.search, url.hash]).toEqual(["", "", "", ""]);
        // However a server decodes the segments below the base path, none climbs or splits.
        const segments = url.pathname.slice(basePath.length + 1).split("/");
        for (const [i, raw] of segments.entries()) {
          const decoded = decodeURIComponent(raw);
          expect(decoded === "" && i < segments.length - 1).toBe(false);
          expect(/^\.+$/.test(decoded.split(";")[0] ?? "")).toBe(false);
          // Encoded '@', '?' or '#' is segment data; encoded separators and controls are not.
          expect(decoded.includes("/") || decoded.includes("\\")).toBe(false);
          expect([...decoded].some((ch) => (ch.codePointAt(0) ?? 0) < 0x20 || ch === "\u007f")).toBe(false);
        }
      }),
      { numRuns: 3_000 },
    );
    // The generator must reach the accepting branch too, or the property proves nothing.
    expect(accepted).toBeGreaterThan(20);
  });

  it("C24 refuses every absolute URL, scheme-relative URL or URL after a slash given as the path", () => {
    const asPath = fc
      .tuple(fc.webUrl(), fc.constantFrom("absolute", "scheme-relative", "after a slash"))
      .map(([url, how]) =>
        how === "absolute"
          ? url
          : how === "after a slash"
            ? `/${url}`
            : `//${url.replace(/^[a-z]+:\/\//, "")}`,
      );
    fc.assert(
      fc.property(fc.constantFrom(...BASES), asPath, (base, path) => {
        const outcome = resolve(base, path);
        expect(outcome).toHaveProperty("refused");
        expect("refused" in outcome ? outcome.refused : undefined).toMatchObject({
          code: "invalid_argument",
        });
      }),
      { numRuns: 500 },
    );
  });
});

// ---------------------------------------------------------------------------------------------
// Addresses (C26): every address inside a blocked range is refused, in every spelling
// getaddrinfo/inet_aton accepts and in every IPv6 form that carries an IPv4 address
// (mapped, NAT64, 6to4). Ranges are written out here from the catalogue and IANA's
// special-purpose registries, not imported from the code under test.

const BLOCKED_V4: ReadonlyArray<readonly [string, number]> = [
  ["127.0.0.0", 8],
  ["0.0.0.0", 8],
  ["10.0.0.0", 8],
  ["100.64.0.0", 10],
  ["169.254.0.0", 16],
  ["172.16.0.0", 12],
  ["192.168.0.0", 16],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.88.99.0", 24],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4],
  ["240.0.0.0", 4],
];

const BLOCKED_V6: ReadonlyArray<readonly [string, number]> = [
  ["::1", 128],
  ["fc00::", 7],
  ["fe80::", 10],
  ["fec0::", 10],
  ["ff00::", 8],
  ["2001:db8::", 32],
  ["100::", 64],
];

const v4ToInt = (dotted: string) => dotted.split(".").reduce((n, part) => n * 256 + Number(part), 0);
const intToV4 = (n: number) => [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
const inV4Range = (n: number, [net, prefix]: readonly [string, number]) =>
  prefix === 0 || n >>> (32 - prefix) === v4ToInt(net) >>> (32 - prefix);

const addressIn = ([net, prefix]: readonly [string, number]) =>
  fc.integer({ min: 0, max: 2 ** (32 - prefix) - 1 }).map((host) => (v4ToInt(net) + host) >>> 0);

const hex16 = (n: number) => n.toString(16);
const highWord = (n: number) => hex16(n >>> 16);
const lowWord = (n: number) => hex16(n & 0xffff);

/** Spellings of one IPv4 address that a resolver or URL parser would take to mean it. */
function v4Spellings(n: number, suffix: string): Array<readonly [string, string]> {
  const [a, b, c, d] = [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255];
  const octal = (x: number) => `0${x.toString(8)}`;
  return [
    ["dotted", intToV4(n)],
    ["one decimal number", String(n)],
    ["one hex number", `0x${n.toString(16)}`],
    ["octal parts", [a, b, c, d].map(octal).join(".")],
    ["hex parts", [a, b, c, d].map((x) => `0x${x.toString(16)}`).join(".")],
    ["a.b.16bit", `${a}.${b}.${(c << 8) | d}`],
    ["a.24bit", `${a}.${n & 0xffffff}`],
    ["IPv4-mapped dotted", `::ffff:${intToV4(n)}`],
    ["IPv4-mapped hex", `::ffff:${highWord(n)}:${lowWord(n)}`],
    ["IPv4-mapped bracketed", `[::ffff:${intToV4(n)}]`],
    ["IPv4-mapped uncompressed, upper case", `0:0:0:0:0:FFFF:${highWord(n)}:${lowWord(n)}`.toUpperCase()],
    ["NAT64", `64:ff9b::${highWord(n)}:${lowWord(n)}`],
    ["NAT64 dotted", `64:ff9b::${intToV4(n)}`],
    ["6to4", `2002:${highWord(n)}:${lowWord(n)}::${suffix}`],
    ["6to4 with a subnet", `2002:${highWord(n)}:${lowWord(n)}:${suffix}::1`],
  ];
}

const suffixWord = fc.integer({ min: 1, max: 0xffff }).map(hex16);

/** A random address inside an IPv6 prefix, as 8 words. */
const v6AddressIn = ([net, prefix]: readonly [string, number]) =>
  fc.array(fc.integer({ min: 0, max: 0xffff }), { minLength: 8, maxLength: 8 }).map((random) => {
    const netWords = new URL(`http://[${net}]`).hostname
      .slice(1, -1)
      .split("::")
      .map((half) => (half === "" ? [] : half.split(":").map((w) => Number.parseInt(w, 16))));
    const head = netWords[0] ?? [];
    const tail = netWords[1] ?? [];
    const words = [...head, ...Array<number>(8 - head.length - tail.length).fill(0), ...tail];
    return words.map((w, i) => {
      const fixedBits = Math.min(16, Math.max(0, prefix - 16 * i));
      const mask = fixedBits === 0 ? 0 : (0xffff << (16 - fixedBits)) & 0xffff;
      return (w & mask) | ((random[i] ?? 0) & ~mask & 0xffff);
    });
  });

function v6Spellings(words: number[]): Array<readonly [string, string]> {
  const full = words.map(hex16).join(":");
  return [
    ["uncompressed", full],
    ["zero-padded, upper case", words.map((w) => w.toString(16).padStart(4, "0").toUpperCase()).join(":")],
    ["compressed", new URL(`http://[${full}]`).hostname.slice(1, -1)],
    ["bracketed", `[${full}]`],
  ];
}

describe("C26 blocked address ranges, as a property", () => {
  const guard = createAddressGuard({ allowLoopback: false });
  const devGuard = createAddressGuard({ allowLoopback: true });

  it.each(BLOCKED_V4.map((range) => [`${range[0]}/${range[1]}`, range] as const))(
    "C26 refuses every address in %s, in every IPv4 spelling and IPv6 form that carries it",
    (_name, range) => {
      fc.assert(
        fc.property(addressIn(range), suffixWord, (n, suffix) => {
          const allowed = v4Spellings(n, suffix)
            .filter(
              ([, spelling]) =>
                guard.refusalReason(spelling) === undefined ||
                // allowLoopback (dev/test only) opens 127/8 and nothing else.
                (range[0] !== "127.0.0.0" && devGuard.refusalReason(spelling) === undefined),
            )
            .map(([form]) => form);
          expect(allowed).toEqual([]);
        }),
        { numRuns: 100 },
      );
    },
  );

  it.each(BLOCKED_V6.map((range) => [`${range[0]}/${range[1]}`, range] as const))(
    "C26 refuses every address in %s, however it is written",
    (_name, range) => {
      fc.assert(
        fc.property(v6AddressIn(range), (words) => {
          const allowed = v6Spellings(words)
            .filter(([, spelling]) => guard.refusalReason(spelling) === undefined)
            .map(([form]) => form);
          expect(allowed).toEqual([]);
        }),
        { numRuns: 150 },
      );
    },
  );

  // The cloud metadata address, the one target every SSRF tries first, in every spelling as fixed
  // cases: random sampling of 169.254/16 almost never lands on it (catalogue W3).
  it.each(v4Spellings(v4ToInt("169.254.169.254"), "1").concat(v4Spellings(v4ToInt("169.254.170.2"), "1")))(
    "W3 refuses the metadata address written as %s (%s)",
    (_form, spelling) => {
      expect(guard.refusalReason(spelling)).toBeDefined();
      expect(devGuard.refusalReason(spelling)).toBeDefined();
    },
  );

  it.each(["fd00:ec2::254", "[fd00:ec2::254]", "FD00:0EC2:0000:0000:0000:0000:0000:0254"])(
    "W3 refuses the IPv6 metadata address written as %s",
    (spelling) => {
      expect(guard.refusalReason(spelling)).toBeDefined();
    },
  );

  it("C26 allows public IPv4 addresses and their mapped forms (the guard does not just refuse everything)", () => {
    const publicV4 = fc
      .integer({ min: 0, max: 2 ** 32 - 1 })
      .filter((n) => !BLOCKED_V4.some((range) => inV4Range(n, range)));
    fc.assert(
      fc.property(publicV4, (n) => {
        expect(guard.refusalReason(intToV4(n))).toBeUndefined();
        expect(guard.refusalReason(String(n))).toBeUndefined();
        expect(guard.refusalReason(`::ffff:${intToV4(n)}`)).toBeUndefined();
        expect(guard.refusalReason(`64:ff9b::${highWord(n)}:${lowWord(n)}`)).toBeUndefined();
      }),
      { numRuns: 300 },
    );
  });
});
