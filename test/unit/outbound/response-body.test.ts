import { Readable } from "node:stream";
import { brotliCompressSync, gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { BrokerError } from "../../../src/errors.js";
import { contentCodings, decodeContent, scrubbedChunks } from "../../../src/outbound/response-body.js";
import { createScrubber } from "../../../src/outbound/response-scrubber.js";

const noSecrets = createScrubber([]);

async function collect(source: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of source) parts.push(c);
  return Buffer.concat(parts);
}

describe("response body decoding and caps (C33)", () => {
  it("C33 stops inflating a gzip bomb shortly after the decoded cap", async () => {
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024), { level: 9 });
    expect(bomb.length).toBeLessThan(128 * 1024);
    const decoded = decodeContent(Readable.from([bomb]), "gzip");
    let inflated = 0;
    decoded.on("data", (c: Buffer) => {
      inflated += c.length;
    });
    decoded.pause();
    const cap = 1024 * 1024;
    const err = await collect(scrubbedChunks(decoded, cap, noSecrets)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BrokerError);
    expect((err as BrokerError).code).toBe("resource_exhausted");
    // Decoding is pulled by the reader: it stops within a few zlib chunks of the cap.
    expect(inflated).toBeGreaterThan(cap);
    expect(inflated).toBeLessThan(cap + 256 * 1024);
    expect(decoded.destroyed).toBe(true);
  });

  it("decodes gzip, brotli and stacked encodings in reverse order", async () => {
    const text = Buffer.from("hello world");
    expect(await collect(decodeContent(Readable.from([gzipSync(text)]), "gzip"))).toEqual(text);
    expect(await collect(decodeContent(Readable.from([brotliCompressSync(text)]), "br"))).toEqual(text);
    const stacked = brotliCompressSync(gzipSync(text));
    expect(await collect(decodeContent(Readable.from([stacked]), "gzip, br"))).toEqual(text);
  });

  it("passes identity bodies through untouched", async () => {
    const source = Readable.from([Buffer.from("plain")]);
    expect(decodeContent(source, "identity")).toBe(source);
    expect(decodeContent(source, undefined)).toBe(source);
  });

  it("refuses an encoding it cannot decode, since it could not scrub it", () => {
    expect(() => decodeContent(Readable.from([]), "zstd")).toThrow(BrokerError);
  });

  it("L2 decodes every Content-Encoding header line, not only the first", async () => {
    const text = Buffer.from("echo of sk_live_key_value");
    const twice = gzipSync(gzipSync(text));
    expect(await collect(decodeContent(Readable.from([twice]), ["gzip", "gzip"]))).toEqual(text);
    expect(await collect(decodeContent(Readable.from([twice]), "gzip, gzip"))).toEqual(text);
    expect(contentCodings(["identity", "gzip"])).toEqual(["gzip"]);
  });

  it("L2 refuses an unknown coding on any line, and more than two stacked codings, with unavailable", () => {
    for (const header of [["gzip", "zstd"], ["zstd", "gzip"], "gzip, gzip, gzip", ["gzip", "br", "gzip"]]) {
      let caught: unknown;
      try {
        decodeContent(Readable.from([]), header);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(BrokerError);
      expect((caught as BrokerError).code).toBe("unavailable");
    }
  });

  it("allows a body exactly at the cap", async () => {
    const body = await collect(scrubbedChunks(Readable.from([Buffer.alloc(100)]), 100, noSecrets));
    expect(body.length).toBe(100);
  });
});
