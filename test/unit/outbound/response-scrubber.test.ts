import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { createScrubber, secretVariants } from "../../../src/outbound/response-scrubber.js";

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
