import { pipeline, type Readable, type Transform } from "node:stream";
import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import { BrokerError } from "../errors.js";
import { SCRUB_SLICE_BYTES, type Scrubber } from "./response-scrubber.js";

// At most this many codings stacked on one body; more is refused rather than decoded.
const MAX_CODINGS = 2;

/**
 * The content codings of a response, in the order applied, from EVERY Content-Encoding line
 * (L2): a second header line is a second coding, so honouring only the first would pass a
 * gzipped body on unscrubbed. "identity" and empty entries are no coding.
 */
export function contentCodings(header: string | readonly string[] | undefined): string[] {
  const lines = header === undefined ? [] : typeof header === "string" ? [header] : header;
  return lines
    .flatMap((line) => line.split(","))
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== "" && c !== "identity");
}

/**
 * Undoes the content codings the upstream applied although we asked for identity: the body
 * must be plain to be scrubbed. Every coding is decoded, or the answer is refused (unavailable)
 * before any of it is read: an unknown coding, or more than MAX_CODINGS. Decoders are streams
 * pulled only as fast as we read, so a gzip bomb inflates no further than the size cap lets
 * the reader go.
 */
export function decodeContent(
  body: Readable,
  contentEncoding: string | readonly string[] | undefined,
): Readable {
  const codings = contentCodings(contentEncoding);
  if (codings.length === 0) return body;
  if (codings.length > MAX_CODINGS)
    throw new BrokerError("unavailable", "upstream used an unsupported content-encoding");
  // Codings are listed in the order applied; undo them in reverse.
  const decoders: Transform[] = codings.reverse().map((c) => {
    if (c === "gzip" || c === "x-gzip") return createGunzip();
    if (c === "deflate") return createInflate();
    if (c === "br") return createBrotliDecompress();
    throw new BrokerError("unavailable", "upstream used an unsupported content-encoding");
  });
  // pipeline destroys every stage when one fails or the reader stops early.
  return pipeline([body, ...decoders], () => {}) as unknown as Readable;
}

/**
 * The whole DECODED body, failing with resource_exhausted as soon as it passes the cap; the
 * source is destroyed then (and whenever reading stops), so no more is read (C33).
 */
export async function readCapped(source: Readable, maxBytes: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) {
        throw new BrokerError("resource_exhausted", "upstream response is larger than this provider allows");
      }
      parts.push(chunk);
    }
  } finally {
    source.destroy();
  }
  return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, total);
}

/**
 * Yields the body scrubbed, failing with resource_exhausted as soon as the DECODED size passes
 * the cap; the source is destroyed then, so no more is read (C33).
 */
export async function* scrubbedChunks(
  source: Readable,
  maxBytes: number,
  scrubber: Scrubber,
): AsyncGenerator<Buffer, void, undefined> {
  const stream = scrubber.createStream();
  let total = 0;
  let sinceYield = 0;
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) {
        throw new BrokerError("resource_exhausted", "upstream response is larger than this provider allows");
      }
      // A large chunk is scrubbed a slice at a time with the event loop let run between slices
      // (H1): `for await` over buffered data would otherwise never yield to timers or I/O.
      for (let at = 0; at < chunk.length; at += SCRUB_SLICE_BYTES) {
        if (sinceYield >= SCRUB_SLICE_BYTES) {
          await yieldToEventLoop();
          sinceYield = 0;
        }
        const slice = chunk.subarray(at, at + SCRUB_SLICE_BYTES);
        sinceYield += slice.length;
        const out = stream.push(slice);
        if (out.length > 0) yield out;
      }
    }
    const tail = stream.flush();
    if (tail.length > 0) yield tail;
  } finally {
    source.destroy();
  }
}
