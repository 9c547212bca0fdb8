import { pipeline, type Readable, type Transform } from "node:stream";
import { createBrotliDecompress, createGunzip, createInflate } from "node:zlib";
import { BrokerError } from "../errors.js";
import type { Scrubber } from "./response-scrubber.js";

/**
 * Undoes a content-encoding the upstream applied although we asked for identity: the body must
 * be plain to be scrubbed. Decoders are streams pulled only as fast as we read, so a gzip bomb
 * inflates no further than the size cap lets the reader go.
 */
export function decodeContent(body: Readable, contentEncoding: string | undefined): Readable {
  const codings = (contentEncoding ?? "")
    .split(",")
    .map((c) => c.trim().toLowerCase())
    .filter((c) => c !== "" && c !== "identity");
  if (codings.length === 0) return body;
  if (codings.length > 2)
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
  try {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > maxBytes) {
        throw new BrokerError("resource_exhausted", "upstream response is larger than this provider allows");
      }
      const out = stream.push(chunk);
      if (out.length > 0) yield out;
    }
    const tail = stream.flush();
    if (tail.length > 0) yield tail;
  } finally {
    source.destroy();
  }
}
