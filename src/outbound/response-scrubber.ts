import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { createEscapeDecoder } from "./escape-decoder.js";
import { buildPatternAutomaton, FOLD, type PatternAutomaton } from "./pattern-automaton.js";

/** Replaces every known encoding of the secrets in a response with `[REDACTED]` (C31). */
export interface Scrubber {
  /** Scrubs in one go: for small inputs (tests, header values); bodies use `scrubInSlices`. */
  scrub(data: Uint8Array): Buffer;
  /** Scrubs a body `SCRUB_SLICE_BYTES` at a time, letting the event loop run between slices (H1). */
  scrubInSlices(data: Uint8Array): Promise<Buffer>;
  /** For header names and values, which undici decodes as latin1 (one char per byte). */
  scrubText(text: string): string;
  /** A scrubber for one streamed body, which catches secrets split across chunks. */
  createStream(): StreamScrubber;
}

/** Stateful scrubber for one body; call `push` per chunk and `flush` once at the end. */
export interface StreamScrubber {
  push(chunk: Uint8Array): Buffer;
  flush(): Buffer;
}

export const REDACTED = Buffer.from("[REDACTED]", "latin1");

/**
 * Values shorter than this are not scrubbed (H1). A short value cannot be hidden by redaction:
 * it turns up in innocent text (a 4-byte value is expected hundreds of times in 4 MiB of
 * random text, an 8-byte one about once in 10^8 MiB), every hit costs output, and where the
 * caller controls part of an echoed answer the redactions are an oracle that spells the value
 * out. 8 bytes is also the shortest base64 fragment already matched (below) and shorter than
 * any real API key, token or signing secret. Every pattern is therefore at least 8 bytes long,
 * so a redaction (10 bytes) at most adds 25% to the output: output <= 1.25 x input.
 */
export const MIN_SECRET_BYTES = 8;

/** Bytes scrubbed between two turns of the event loop. */
export const SCRUB_SLICE_BYTES = 64 * 1024;

// Partial base64 alignments are only matched when the secret-only core is this long; shorter
// cores would redact innocent text without hiding anything useful.
const MIN_ALIGNED_CORE = MIN_SECRET_BYTES;

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The byte strings an upstream might echo a secret as, matched in the raw body AND in the body
 * with its escapes undone (escape-decoder.ts: percent, JSON/JavaScript and HTML escapes, in any
 * mix), ignoring ASCII case and the base64 alphabet (pattern-automaton.ts `FOLD`): raw, base64
 * (padded, unpadded, and at the two other 3-byte alignments, as when the secret sits inside a
 * longer encoded value such as a Basic credential), hex, and form encoding's "+" for a space.
 * Empty for a secret shorter than MIN_SECRET_BYTES.
 */
export function secretVariants(secret: Uint8Array): Buffer[] {
  if (secret.length < MIN_SECRET_BYTES) return [];
  const raw = Buffer.from(secret);
  const variants = [raw];
  const base64 = raw.toString("base64");
  variants.push(Buffer.from(base64, "latin1"), Buffer.from(base64.replace(/=+$/, ""), "latin1"));
  variants.push(Buffer.from(raw.toString("hex"), "latin1"));
  for (const shift of [0, 1, 2]) {
    const core = alignedCore(Buffer.concat([Buffer.alloc(shift), raw]), shift);
    if (core.length >= MIN_ALIGNED_CORE) variants.push(Buffer.from(core, "latin1"));
  }
  let decoded: string | undefined;
  try {
    decoded = strictUtf8.decode(raw);
  } catch {
    decoded = undefined;
  }
  // Form encoding writes a space as "+", which no escape decoding turns back.
  if (decoded?.includes(" ")) variants.push(Buffer.from(decoded.replaceAll(" ", "+"), "utf8"));
  // Patterns that fold to the same bytes are one pattern.
  const seen = new Set<string>();
  return variants.filter((v) => {
    const key = Buffer.from(v.map((b) => FOLD[b] as number)).toString("latin1");
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * Base64 of the secret when preceded by `shift` unknown bytes and followed by anything: only
 * the characters the secret's bits alone decide. `padded` is the secret after `shift` zero bytes.
 */
function alignedCore(padded: Buffer, shift: number): string {
  const encoded = padded.toString("base64").replace(/=+$/, "");
  const start = [0, 2, 3][shift] ?? 0; // first char made only of secret bits
  const end = Math.floor((padded.length * 8) / 6); // last char made only of secret bits
  return encoded.slice(start, end);
}

/** A scrubber for the given secret values; values under MIN_SECRET_BYTES are left out. */
export function createScrubber(secrets: readonly Uint8Array[]): Scrubber {
  const automaton = buildPatternAutomaton(secrets.flatMap((s) => secretVariants(s)));
  const scrub = (data: Uint8Array): Buffer => {
    if (automaton.maxLength === 0) return Buffer.from(data);
    const stream = createScrubStream(automaton);
    return Buffer.concat([stream.push(data), stream.flush()]);
  };
  return {
    scrub,
    async scrubInSlices(data) {
      if (automaton.maxLength === 0) return Buffer.from(data);
      const stream = createScrubStream(automaton);
      const parts: Buffer[] = [];
      for (let at = 0; at < data.length; at += SCRUB_SLICE_BYTES) {
        if (at > 0) await yieldToEventLoop();
        parts.push(stream.push(data.subarray(at, at + SCRUB_SLICE_BYTES)));
      }
      parts.push(stream.flush());
      return Buffer.concat(parts);
    },
    scrubText: (text) => scrub(Buffer.from(text, "latin1")).toString("latin1"),
    createStream: () =>
      automaton.maxLength === 0
        ? { push: (chunk) => Buffer.from(chunk), flush: () => Buffer.alloc(0) }
        : createScrubStream(automaton),
  };
}

/**
 * One pass over a body: each byte steps the automaton twice, once as it is and once as the
 * escape decoder turns it (a match there redacts the source bytes that spell it). Overlapping
 * matches become one redaction. Output is held back only while a match could still start in it:
 * fewer than the longest pattern's length of source bytes, so memory does not grow with the body.
 */
function createScrubStream(automaton: PatternAutomaton): StreamScrubber {
  const maxLength = automaton.maxLength;
  let seen = 0; // offset of the next source byte
  let emitted = 0; // source bytes before this are written out, or swallowed by a redaction
  let redactEnd = 0; // end of the last redaction written out
  let carry: Buffer = Buffer.alloc(0); // source bytes [emitted, seen)
  let rawState = 0;
  let decodedState = 0;
  let decodedCount = 0;
  // Where the last maxLength decoded bytes start in the source.
  const decodedStarts = new Float64Array(maxLength);
  // Matches not yet written: [start, end) pairs, sorted and disjoint, from `head` on.
  let pending: number[] = [];
  let head = 0;

  const addMatch = (start: number, end: number): void => {
    if (end <= emitted) return; // inside a redaction already written
    if (start < redactEnd) {
      // It extends the redaction already written (which is then the last thing written): swallow
      // its bytes and every pending match it reaches.
      let until = end;
      while (head < pending.length && (pending[head] as number) < until) {
        until = Math.max(until, pending[head + 1] as number);
        head += 2;
      }
      emitted = until;
      redactEnd = until;
      return;
    }
    let s = start;
    let e = end;
    let after = pending.length;
    while (after > head && (pending[after - 2] as number) >= e) after -= 2;
    let from = after;
    while (from > head && (pending[from - 1] as number) > s) {
      s = Math.min(s, pending[from - 2] as number);
      e = Math.max(e, pending[from - 1] as number);
      from -= 2;
    }
    pending.splice(from, after - from, s, e);
  };

  const decoder = createEscapeDecoder((byte, from, to) => {
    decodedStarts[decodedCount % maxLength] = from;
    decodedCount++;
    decodedState = automaton.step(decodedState, byte);
    const length = automaton.matchLength(decodedState);
    if (length > 0) addMatch(decodedStarts[(decodedCount - length) % maxLength] as number, to);
  });

  // The first source offset a match found later could cover.
  const safeOffset = (): number => {
    const raw = seen - maxLength + 1;
    const first = decodedCount - maxLength + 1; // earliest decoded byte a later match can use
    let decodedSafe: number;
    if (first <= 0) decodedSafe = 0;
    else if (first < decodedCount) decodedSafe = decodedStarts[first % maxLength] as number;
    else decodedSafe = decoder.pendingStart() >= 0 ? decoder.pendingStart() : seen;
    return Math.min(raw, decodedSafe);
  };

  // Writes out everything before `safe`; `work` holds source bytes from `workStart` to `seen`.
  const release = (safe: number, work: Buffer, workStart: number): Buffer => {
    const parts: Buffer[] = [];
    while (head < pending.length && (pending[head] as number) < safe) {
      const s = pending[head] as number;
      const e = pending[head + 1] as number;
      head += 2;
      if (s > emitted) parts.push(work.subarray(emitted - workStart, s - workStart));
      parts.push(REDACTED);
      emitted = e;
      redactEnd = e;
    }
    if (safe > emitted) {
      parts.push(work.subarray(emitted - workStart, safe - workStart));
      emitted = safe;
    }
    pending = pending.slice(head);
    head = 0;
    const out = Buffer.concat(parts);
    carry = Buffer.from(work.subarray(emitted - workStart));
    return out;
  };

  return {
    push(chunk) {
      const workStart = emitted;
      const work =
        carry.length === 0
          ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
          : Buffer.concat([carry, chunk]);
      for (let i = 0; i < chunk.length; i++) {
        const byte = chunk[i] as number;
        const pos = seen + i;
        rawState = automaton.step(rawState, byte);
        const length = automaton.matchLength(rawState);
        if (length > 0) addMatch(pos + 1 - length, pos + 1);
        decoder.feed(byte, pos);
      }
      seen += chunk.length;
      return release(safeOffset(), work, workStart);
    },
    flush() {
      const workStart = emitted;
      decoder.end();
      return release(seen, carry, workStart);
    },
  };
}
