import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { createEscapeDecoder } from "./escape-decoder.js";
import {
  buildPatternAutomaton,
  buildPatternAutomatonInSlices,
  FOLD,
  type PatternAutomaton,
  stepAutomaton,
} from "./pattern-automaton.js";

/** Replaces every known encoding of the secrets in a response with `[REDACTED]` (C31). */
export interface Scrubber {
  /**
   * Scrubs in one go: for small inputs (tests, header values); bodies use `scrubInSlices`. Both
   * may return a view of `data` itself when there was nothing to redact.
   */
  scrub(data: Uint8Array): Buffer;
  /**
   * Scrubs a body `SCRUB_SLICE_BYTES` (or `SCRUB_SLICE_MS`) at a time, letting the event loop
   * run between slices (H1).
   * The output is written into one buffer sized for the worst case (1.25 x the input, see
   * MIN_SECRET_BYTES), of which only the part written is ever touched.
   */
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

/** Bytes scrubbed between two turns of the event loop, at most. */
export const SCRUB_SLICE_BYTES = 16 * 1024;

/**
 * Time scrubbed between two turns of the event loop, at most (checked every SCRUB_STEP_BYTES):
 * bytes alone do not bound it, since the first slices in a process run before the scan loop is
 * optimised, at up to ~2 us a byte on a busy core.
 */
export const SCRUB_SLICE_MS = 4;
const SCRUB_STEP_BYTES = 1024;

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
    const folded = Buffer.allocUnsafe(v.length);
    for (let i = 0; i < v.length; i++) folded[i] = FOLD[v[i] as number] as number;
    const key = folded.toString("latin1");
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
  return scrubberFor(buildPatternAutomaton(scrubPatterns(secrets)));
}

/**
 * `createScrubber`, with the automaton built a slice at a time so the event loop runs in between
 * (H1): the largest secret (8 fields of 8 KiB, each in every encoding) is several hundred
 * thousand automaton nodes. The outbound client uses this one.
 */
export async function createScrubberInSlices(secrets: readonly Uint8Array[]): Promise<Scrubber> {
  const patterns: Buffer[] = [];
  for (const secret of secrets) {
    // One secret's variants (up to 8 KiB in seven encodings) at a time.
    if (patterns.length > 0) await yieldToEventLoop();
    patterns.push(...secretVariants(secret));
  }
  return scrubberFor(await buildPatternAutomatonInSlices(patterns));
}

function scrubPatterns(secrets: readonly Uint8Array[]): Buffer[] {
  return secrets.flatMap((s) => secretVariants(s));
}

function scrubberFor(automaton: PatternAutomaton): Scrubber {
  const scrub = (data: Uint8Array): Buffer => {
    if (automaton.maxLength === 0) return asBuffer(data);
    const source = asBuffer(data);
    const scan = createScan(automaton);
    const out = createOutput(source.length, source);
    scan.feed(source, 0, source.length);
    scan.release(scan.safeOffset(), source, 0, out);
    scan.end();
    scan.release(scan.seen(), source, 0, out);
    return written(out);
  };
  return {
    scrub,
    async scrubInSlices(data) {
      if (automaton.maxLength === 0) return asBuffer(data);
      const source = asBuffer(data);
      const scan = createScan(automaton);
      // The whole body is at hand: matches redact straight from it into one output buffer, so
      // no slice is copied or concatenated and nothing is carried between slices.
      const out = createOutput(source.length, source);
      let sliceAt = 0;
      let sliceStarted = performance.now();
      for (let at = 0; at < source.length; ) {
        const to = Math.min(source.length, at + SCRUB_STEP_BYTES);
        scan.feed(source, at, to);
        at = to;
        if (at - sliceAt >= SCRUB_SLICE_BYTES || performance.now() - sliceStarted >= SCRUB_SLICE_MS) {
          scan.release(scan.safeOffset(), source, 0, out);
          await yieldToEventLoop();
          sliceAt = at;
          sliceStarted = performance.now();
        }
      }
      scan.end();
      scan.release(scan.seen(), source, 0, out);
      return written(out);
    },
    scrubText: (text) => scrub(Buffer.from(text, "latin1")).toString("latin1"),
    createStream: () =>
      automaton.maxLength === 0
        ? { push: (chunk) => Buffer.from(chunk), flush: () => Buffer.alloc(0) }
        : createScrubStream(automaton),
  };
}

/** The same bytes as a Buffer, without copying. */
function asBuffer(data: Uint8Array): Buffer {
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** A stream scrubber: the source bytes a later match could still cover are carried to the next push. */
function createScrubStream(automaton: PatternAutomaton): StreamScrubber {
  const scan = createScan(automaton);
  let carry: Buffer = Buffer.alloc(0); // source bytes [emitted, seen)
  let carryStart = 0;
  const releaseFrom = (work: Buffer, workStart: number, safe: number): Buffer => {
    const out = createOutput(safe > workStart ? safe - workStart : 0, undefined);
    scan.release(safe, work, workStart, out);
    const emitted = scan.emitted();
    carry = Buffer.from(work.subarray(emitted - workStart));
    carryStart = emitted;
    return written(out);
  };
  return {
    push(chunk) {
      const work =
        carry.length === 0
          ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength)
          : Buffer.concat([carry, chunk]);
      const workStart = carryStart;
      const at = work.length - chunk.length;
      scan.feed(work, at, work.length);
      return releaseFrom(work, workStart, scan.safeOffset());
    },
    flush() {
      scan.end();
      return releaseFrom(carry, carryStart, scan.seen());
    },
  };
}

/**
 * Where scrubbed bytes are written. While nothing has been redacted, the output is a prefix of
 * `identity` (the whole source, when it is at hand) and is not copied: an answer without a
 * secret costs no second buffer. The buffer, once needed, is sized for the worst case (every
 * redaction replaces at least MIN_SECRET_BYTES source bytes) and grows only as a safeguard.
 */
interface Output {
  buf: Buffer | undefined;
  len: number;
  readonly size: number;
  readonly identity: Buffer | undefined;
}

function createOutput(sourceBytes: number, identity: Buffer | undefined): Output {
  const worst =
    sourceBytes + Math.ceil((sourceBytes * (REDACTED.length - MIN_SECRET_BYTES)) / MIN_SECRET_BYTES);
  return { buf: undefined, len: 0, size: worst + REDACTED.length, identity };
}

/** Appends `source[from, to)`; copies without a view object per call (one per match adds up). */
function write(out: Output, source: Buffer, from: number, to: number): void {
  let buf = out.buf;
  if (buf === undefined) {
    if (source === out.identity && from === out.len) {
      out.len = to; // still the source itself
      return;
    }
    buf = Buffer.allocUnsafe(Math.max(out.size, out.len + (to - from)));
    if (out.identity !== undefined) out.identity.copy(buf, 0, 0, out.len);
    out.buf = buf;
  }
  if (out.len + (to - from) > buf.length) {
    const grown = Buffer.allocUnsafe(Math.max(buf.length * 2, out.len + (to - from)));
    buf.copy(grown, 0, 0, out.len);
    buf = grown;
    out.buf = grown;
  }
  out.len += source.copy(buf, out.len, from, to);
}

/** The bytes written: a view of the source itself when nothing was redacted. */
function written(out: Output): Buffer {
  if (out.buf !== undefined) return out.buf.subarray(0, out.len);
  return out.identity === undefined ? Buffer.alloc(0) : out.identity.subarray(0, out.len);
}

/** The matching state of one body, fed in order; `release` writes out what no later match can touch. */
interface Scan {
  /** Scans `data[from, to)`, the next source bytes (absolute offsets continue from the last feed). */
  feed(data: Uint8Array, from: number, to: number): void;
  /** Ends the input (an unfinished escape is plain text). */
  end(): void;
  /** The first source offset a match found later could cover. */
  safeOffset(): number;
  /** Source bytes fed so far. */
  seen(): number;
  /** Source bytes before this are written out or swallowed by a redaction. */
  emitted(): number;
  /** Writes out the source before `safe` (redacted); `work` holds source bytes from `workStart`. */
  release(safe: number, work: Buffer, workStart: number, out: Output): void;
}

const PERCENT = 0x25;
const BACKSLASH = 0x5c;
const AMPERSAND = 0x26;

/**
 * One pass over a body: each byte steps the automaton twice, once as it is and once as the
 * escape decoder turns it (a match there redacts the source bytes that spell it). Overlapping
 * matches become one redaction. Output is held back only while a match could still start in it:
 * fewer than the longest pattern's length of source bytes, so memory does not grow with the body.
 *
 * The inner loop reads the automaton's arrays directly and takes the escape decoder's path only
 * for bytes that start or continue an escape; elsewhere the decoded byte IS the source byte, and
 * while both passes are in the same state one step serves both.
 */
function createScan(automaton: PatternAutomaton): Scan {
  const { maxLength, out: matchLength } = automaton;
  let seen = 0; // offset of the next source byte
  let emitted = 0; // source bytes before this are written out, or swallowed by a redaction
  let redactEnd = 0; // end of the last redaction written out
  let rawState = 0;
  let decodedState = 0;
  let decodedCount = 0;
  let decoderIdle = true;
  // Where the last maxLength (or more: a power of two) decoded bytes start in the source.
  let ringSize = 1;
  while (ringSize < maxLength) ringSize *= 2;
  const ringMask = ringSize - 1;
  const decodedStarts = new Float64Array(ringSize);
  // Matches not yet written: [start, end) pairs, sorted and disjoint, from `head` on.
  const pending: number[] = [];
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
    const last = pending.length;
    if (last === head || (pending[last - 1] as number) <= start) {
      // The common case: after every pending match.
      pending.push(start, end);
      return;
    }
    if ((pending[last - 2] as number) <= start && (pending[last - 1] as number) >= end) return; // already covered
    let s = start;
    let e = end;
    let after = last;
    while (after > head && (pending[after - 2] as number) >= e) after -= 2;
    let from = after;
    while (from > head && (pending[from - 1] as number) > s) {
      s = Math.min(s, pending[from - 2] as number);
      e = Math.max(e, pending[from - 1] as number);
      from -= 2;
    }
    pending.splice(from, after - from, s, e);
  };

  const onDecoded = (byte: number, from: number, to: number): void => {
    decodedStarts[decodedCount & ringMask] = from;
    decodedCount++;
    decodedState = stepAutomaton(automaton, decodedState, FOLD[byte] as number);
    const length = matchLength[decodedState] as number;
    if (length > 0) addMatch(decodedStarts[(decodedCount - length) & ringMask] as number, to);
  };
  const decoder = createEscapeDecoder(onDecoded);

  return {
    feed(data, from, to) {
      const base = seen - from;
      for (let i = from; i < to; i++) {
        const byte = data[i] as number;
        const folded = FOLD[byte] as number;
        const pos = base + i;
        const before = rawState;
        rawState = stepAutomaton(automaton, before, folded);
        const rawLength = matchLength[rawState] as number;
        if (rawLength > 0) addMatch(pos + 1 - rawLength, pos + 1);
        if (decoderIdle && byte !== PERCENT && byte !== BACKSLASH && byte !== AMPERSAND) {
          // Not part of an escape: the decoded byte is this byte, from this one source byte.
          decodedStarts[decodedCount & ringMask] = pos;
          decodedCount++;
          decodedState = decodedState === before ? rawState : stepAutomaton(automaton, decodedState, folded);
          const length = matchLength[decodedState] as number;
          if (length > 0) addMatch(decodedStarts[(decodedCount - length) & ringMask] as number, pos + 1);
        } else {
          decoder.feed(byte, pos);
          decoderIdle = decoder.pendingStart() < 0;
        }
      }
      seen = base + to;
    },
    end() {
      decoder.end();
      decoderIdle = true;
    },
    safeOffset() {
      const raw = seen - maxLength + 1;
      const first = decodedCount - maxLength + 1; // earliest decoded byte a later match can use
      let decodedSafe: number;
      if (first <= 0) decodedSafe = 0;
      else if (first < decodedCount) decodedSafe = decodedStarts[first & ringMask] as number;
      else decodedSafe = decoder.pendingStart() >= 0 ? decoder.pendingStart() : seen;
      return Math.min(raw, decodedSafe);
    },
    seen: () => seen,
    emitted: () => emitted,
    release(safe, work, workStart, out) {
      while (head < pending.length && (pending[head] as number) < safe) {
        const s = pending[head] as number;
        const e = pending[head + 1] as number;
        head += 2;
        if (s > emitted) write(out, work, emitted - workStart, s - workStart);
        write(out, REDACTED, 0, REDACTED.length);
        emitted = e;
        redactEnd = e;
      }
      if (safe > emitted) {
        write(out, work, emitted - workStart, safe - workStart);
        emitted = safe;
      }
      // Drop the written matches in place (splice would allocate an array of them each time).
      if (head > 0) {
        const kept = pending.length - head;
        for (let i = 0; i < kept; i++) pending[i] = pending[head + i] as number;
        pending.length = kept;
        head = 0;
      }
    },
  };
}
