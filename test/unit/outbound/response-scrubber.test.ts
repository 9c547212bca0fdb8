import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  createScrubber,
  createScrubberInSlices,
  MIN_SECRET_BYTES,
  SCRUB_SLICE_BYTES,
  secretVariants,
} from "../../../src/outbound/response-scrubber.js";

const SECRET = "sk_live_51HqLyjWDarjtT1zdp7dc";
const b = (s: string): Buffer => Buffer.from(s, "latin1");

describe("response scrubber (C31)", () => {
  const scrubber = createScrubber([Buffer.from(SECRET)]);
  const raw = Buffer.from(SECRET);

  it.each([
    ["raw", SECRET],
    ["base64", raw.toString("base64")],
    ["base64 without padding", raw.toString("base64").replace(/=+$/, "")],
    ["base64url", raw.toString("base64url")],
    ["hex", raw.toString("hex")],
    ["HEX", raw.toString("hex").toUpperCase()],
  ])("C31 redacts the %s form", (_label, form) => {
    expect(scrubber.scrub(b(`{"echo":"${form}"}`)).toString()).toBe('{"echo":"[REDACTED]"}');
  });

  it("C31 redacts URL-encoded and JSON-escaped forms of a secret with reserved characters", () => {
    const tricky = 'a/b+c d&e=f"g';
    const s = createScrubber([Buffer.from(tricky)]);
    for (const form of [
      encodeURIComponent(tricky),
      new URLSearchParams({ x: tricky }).toString().slice(2),
      encodeURIComponent(tricky).replace(/%[0-9A-F]{2}/g, (e) => e.toLowerCase()),
      JSON.stringify(tricky).slice(1, -1),
    ]) {
      expect(s.scrub(b(`<${form}>`)).toString()).toBe("<[REDACTED]>");
    }
  });

  it("C31 redacts the form-encoded form of a secret whose only special character is '~'", () => {
    // encodeURIComponent keeps "~", form encoding escapes it: the secret's URL forms differ.
    const tilde = "key~abc123DEF";
    const s = createScrubber([Buffer.from(tilde)]);
    const form = new URLSearchParams({ x: tilde }).toString().slice(2);
    expect(form).toBe("key%7Eabc123DEF");
    const lowerEscape = form.replace("%7E", "%7e");
    expect(s.scrub(b(`q=${form}&r=${lowerEscape}`)).toString()).toBe("q=[REDACTED]&r=[REDACTED]");
  });

  it("C31 redacts a secret inside a longer base64 value at every byte alignment", () => {
    for (const prefix of ["", "x", "xy", "user:", "Bearer "]) {
      const encoded = Buffer.from(`${prefix}${SECRET}-tail`).toString("base64");
      const out = scrubber.scrub(b(encoded)).toString();
      expect(out).toContain("[REDACTED]");
      // What is left cannot decode back to any 8-character run of the secret.
      const leftover = Buffer.from(out.replace("[REDACTED]", ""), "base64").toString("latin1");
      for (let i = 0; i + 8 <= SECRET.length; i++) expect(leftover).not.toContain(SECRET.slice(i, i + 8));
    }
  });

  it("scrubs header values byte for byte", () => {
    expect(scrubber.scrubText(`https://evil.test/?k=${SECRET}`)).toBe("https://evil.test/?k=[REDACTED]");
  });

  it("leaves text without secrets untouched", () => {
    const text = b("nothing to see here, sk_live_ but not the rest");
    expect(scrubber.scrub(text).equals(text)).toBe(true);
  });

  it("merges overlapping matches into one redaction", () => {
    // Both at least MIN_SECRET_BYTES long: shorter values are not patterns (H1).
    const s = createScrubber([Buffer.from("abcdefgh"), Buffer.from("efghijkl")]);
    expect(s.scrub(b("xxabcdefghijklxx")).toString()).toBe("xx[REDACTED]xx");
  });

  it("ignores empty secrets instead of redacting everything", () => {
    expect(createScrubber([new Uint8Array()]).scrub(b("abc")).toString()).toBe("abc");
    expect(secretVariants(new Uint8Array())).toEqual([]);
  });
});

describe("streaming scrubber (C31 across chunk boundaries)", () => {
  const secrets = [Buffer.from(SECRET), Buffer.from("second-secret-value")];
  const scrubber = createScrubber(secrets);

  function streamed(data: Buffer, cuts: number[]): Buffer {
    const stream = scrubber.createStream();
    const out: Buffer[] = [];
    let at = 0;
    for (const cut of [...cuts].sort((x, y) => x - y)) {
      out.push(stream.push(data.subarray(at, cut)));
      at = cut;
    }
    out.push(stream.push(data.subarray(at)), stream.flush());
    return Buffer.concat(out);
  }

  it("C31 gives the same output as scrubbing the whole body, however it is chunked", () => {
    const piece = fc.constantFrom(
      SECRET,
      Buffer.from(SECRET).toString("base64"),
      Buffer.from(SECRET).toString("hex"),
      encodeURIComponent(SECRET),
      "second-secret-value",
      "sk_live_",
      "filler text ",
      "",
    );
    fc.assert(
      fc.property(
        fc.array(piece, { maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 20 }),
        (pieces, rawCuts) => {
          const data = b(pieces.join(""));
          const cuts = rawCuts.map((c) => (data.length === 0 ? 0 : c % (data.length + 1)));
          const out = streamed(data, cuts);
          expect(out.equals(scrubber.scrub(data))).toBe(true);
          expect(out.toString("latin1")).not.toContain(SECRET);
        },
      ),
      { numRuns: 300 },
    );
  });

  it("C31 catches a secret split one byte per chunk", () => {
    const data = b(`a${SECRET}b`);
    const cuts = Array.from({ length: data.length }, (_, i) => i);
    expect(streamed(data, cuts).toString()).toBe("a[REDACTED]b");
  });

  it("holds back no more than the longest pattern", () => {
    const stream = scrubber.createStream();
    const longest = Math.max(...secrets.flatMap((s) => secretVariants(s)).map((v) => v.length));
    const out = stream.push(Buffer.alloc(10_000, 0x2e));
    expect(out.length).toBe(10_000 - (longest - 1));
    expect(stream.flush().length).toBe(longest - 1);
  });
});

describe("scrubber hardening (H1, L3)", () => {
  const KEY = "sk_live_<H1&key>é9";
  const s = createScrubber([Buffer.from(KEY)]);
  const scrubbed = (text: string): string => s.scrub(Buffer.from(text, "utf8")).toString("utf8");
  const everyUnit = (text: string, f: (u: number) => string): string =>
    [...text].map((c) => [...Array(c.length).keys()].map((i) => f(c.charCodeAt(i))).join("")).join("");

  it("H1 a value shorter than MIN_SECRET_BYTES is not a scrub pattern", () => {
    expect(MIN_SECRET_BYTES).toBe(8);
    expect(secretVariants(Buffer.from("e"))).toEqual([]);
    expect(secretVariants(Buffer.from("1234567"))).toEqual([]);
    const body = Buffer.alloc(4096, "e");
    expect(
      createScrubber([Buffer.from("e")])
        .scrub(body)
        .equals(body),
    ).toBe(true);
  });

  it("H1 lets a concurrent timer run while it scrubs a 4 MiB body, and keeps output within 1.25x of it", async () => {
    // The worst case for the old scrubber: a body that is nothing but matches.
    const secret = Buffer.from("abcdefgh");
    const body = Buffer.alloc(4 * 1024 * 1024);
    for (let i = 0; i < body.length; i++) body[i] = secret[i % secret.length] as number;
    const scrubber = createScrubber([secret]);
    let ticks = 0;
    const timer = setInterval(() => {
      ticks++;
    }, 0);
    let out: Buffer;
    try {
      out = await scrubber.scrubInSlices(body);
    } finally {
      clearInterval(timer);
    }
    expect(ticks).toBeGreaterThan(0);
    expect(out.length).toBeLessThanOrEqual(body.length * 1.25);
    expect(out.toString("latin1")).not.toContain("abcdefgh");
  });

  it("H1 builds the largest secret's automaton in slices, letting the event loop run, and matches like createScrubber", async () => {
    // 8 fields of 8 KiB, each in every encoding: several hundred thousand automaton nodes.
    const fields = Array.from({ length: 8 }, (_, i) => Buffer.from(`${i}<&>`.padEnd(8192, `${i}abcXYZ+/`)));
    let ticks = 0;
    const timer = setInterval(() => {
      ticks++;
    }, 0);
    let sliced: Awaited<ReturnType<typeof createScrubberInSlices>>;
    try {
      sliced = await createScrubberInSlices(fields);
    } finally {
      clearInterval(timer);
    }
    expect(ticks).toBeGreaterThan(0);
    const third = fields[3] as Buffer;
    const data = b(
      `a${third.toString("hex").toUpperCase()}b${third.toString("base64url")}c${third.toString("latin1")}`,
    );
    const out = sliced.scrub(data);
    expect(out.toString("latin1")).toBe("a[REDACTED]b[REDACTED]c[REDACTED]");
    expect(out.equals(createScrubber(fields).scrub(data))).toBe(true);
  });

  it("H1 scrubInSlices finds what scrub finds, across slice boundaries", async () => {
    const filler = "x".repeat(SCRUB_SLICE_BYTES - 5);
    const data = b(`${filler}${SECRET}${filler}${Buffer.from(SECRET).toString("base64")}`);
    const whole = scrubber.scrub(data);
    expect((await scrubber.scrubInSlices(data)).equals(whole)).toBe(true);
    expect(whole.toString("latin1")).not.toContain(SECRET);
  });

  const scrubber = createScrubber([Buffer.from(SECRET)]);

  it.each([
    [
      "JSON with <, > and & escaped (Go)",
      JSON.stringify(KEY)
        .slice(1, -1)
        .replace(/[<>&]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`),
    ],
    [
      "JSON with non-ASCII escaped (.NET, ensure_ascii)",
      everyUnit(KEY, (u) =>
        u < 0x80 ? String.fromCharCode(u) : `\\u${u.toString(16).toUpperCase().padStart(4, "0")}`,
      ),
    ],
    ["JSON with every character escaped", everyUnit(KEY, (u) => `\\u${u.toString(16).padStart(4, "0")}`)],
    ["HTML named entities", KEY.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")],
    ["HTML decimal references", [...KEY].map((c) => `&#${c.codePointAt(0)};`).join("")],
    ["HTML hex references", [...KEY].map((c) => `&#x${(c.codePointAt(0) as number).toString(16)};`).join("")],
    ["a mix of URL, JSON and HTML escapes", "sk_live_%3CH1\\u0026key&gt;\\u00e99"],
    [
      "mixed-case hex",
      Buffer.from(KEY)
        .toString("hex")
        .replace(/[a-f]/g, (c, i: number) => (i % 2 === 0 ? c.toUpperCase() : c)),
    ],
  ])("L3 redacts the secret as %s", (_label, form) => {
    expect(scrubbed(`{"echo":"${form}"}`)).toBe('{"echo":"[REDACTED]"}');
  });

  it("L3 redacts a base64 echo whose slashes a JSON encoder escaped", () => {
    const key = Buffer.from([0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa, 0xf9, 0xf8, 0xf7]);
    const form = key.toString("base64").replaceAll("/", "\\/");
    expect(form).toContain("\\/");
    expect(
      createScrubber([key])
        .scrub(b(`"${form}"`))
        .toString("latin1"),
    ).toBe('"[REDACTED]"');
  });

  it("L3 scrubs a header name that carries the secret", () => {
    expect(scrubber.scrubText(`x-${SECRET.toUpperCase()}`)).toBe("x-[REDACTED]");
  });

  it("L3 passes text that only looks like an escape through unchanged", () => {
    const text = b("100% &c \\q &#xZZ; &unknown; %G1 \\uD800x trailing %4");
    expect(scrubber.scrub(text).equals(text)).toBe(true);
  });
});
