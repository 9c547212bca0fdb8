/**
 * Undoes, byte by byte and in one pass, the escapes an upstream may wrap an echoed secret in
 * (L3): percent-escapes (`%2F`), JSON and JavaScript escapes (`\"`, `\/`, `\n`, `\u003c`, surrogate
 * pairs `\uD83D\uDE00`) and HTML character references (`&#60;`, `&#x3C;`, `&lt;`, `&amp;`,
 * `&quot;`, `&apos;`). Every escape is decoded wherever it appears, so any MIX of escaped and
 * plain characters decodes to the plain secret (Go and .NET escape `<`, `>`, `&` and non-ASCII by
 * default, some encoders escape everything): no list of encoder policies to keep up to date.
 *
 * Each decoded byte comes with the source range it was decoded from, so a match in the decoded
 * text redacts exactly the source bytes that spell it. A sequence that turns out not to be a
 * valid escape is passed through as it was. Work is linear: an escape is at most 12 bytes and a
 * byte is re-read at most that many times; memory is those 12 bytes.
 */
export interface EscapeDecoder {
  /** Feeds the source byte at absolute offset `pos` (offsets must follow each other). */
  feed(byte: number, pos: number): void;
  /** Ends the input: an unfinished escape is passed through as it was. */
  end(): void;
  /** Offset of the first byte held in an unfinished escape, or -1 when none is held. */
  pendingStart(): number;
}

/** Receives each decoded byte and the source range [start, end) it came from. */
export type DecodedByteSink = (byte: number, start: number, end: number) => void;

const INCOMPLETE = -1;
const INVALID = -2;
// A percent-escape decodes to one BYTE (UTF-8 arrives as several escapes), the others to a code
// point; the flag tells them apart in one number.
const BYTE = 0x1000000;
const MAX_ESCAPE = 12; // "\uD83D\uDE00"

const PERCENT = 0x25;
const BACKSLASH = 0x5c;
const AMPERSAND = 0x26;
const SEMICOLON = 0x3b;

// The byte after a backslash -> what the escape stands for, INVALID when it is not one. A table,
// not a map: every escape in a body reads it.
const SHORT_ESCAPES: Int16Array = (() => {
  const table = new Int16Array(256).fill(INVALID);
  table[0x22] = 0x22; // \"
  table[0x27] = 0x27; // \'
  table[0x2f] = 0x2f; // \/
  table[0x5c] = 0x5c; // \\
  table[0x62] = 0x08; // \b
  table[0x66] = 0x0c; // \f
  table[0x6e] = 0x0a; // \n
  table[0x72] = 0x0d; // \r
  table[0x74] = 0x09; // \t
  return table;
})();

// The named references decoded (the five that escape markup, in lower case), with their ";",
// compared byte by byte: no string is built per byte of a body.
const NAMED: ReadonlyArray<readonly [Uint8Array, number]> = (
  [
    ["amp;", 0x26],
    ["lt;", 0x3c],
    ["gt;", 0x3e],
    ["quot;", 0x22],
    ["apos;", 0x27],
  ] as const
).map(([name, value]) => [Buffer.from(name, "latin1"), value]);

export function createEscapeDecoder(emit: DecodedByteSink): EscapeDecoder {
  const seq = new Uint8Array(MAX_ESCAPE);
  let len = 0;
  let start = -1;

  const emitCodePoint = (cp: number, from: number, to: number): void => {
    if (cp < 0x80) emit(cp, from, to);
    else if (cp < 0x800) {
      emit(0xc0 | (cp >> 6), from, to);
      emit(0x80 | (cp & 0x3f), from, to);
    } else if (cp < 0x10000) {
      emit(0xe0 | (cp >> 12), from, to);
      emit(0x80 | ((cp >> 6) & 0x3f), from, to);
      emit(0x80 | (cp & 0x3f), from, to);
    } else {
      emit(0xf0 | (cp >> 18), from, to);
      emit(0x80 | ((cp >> 12) & 0x3f), from, to);
      emit(0x80 | ((cp >> 6) & 0x3f), from, to);
      emit(0x80 | (cp & 0x3f), from, to);
    }
  };

  const feed = (byte: number, pos: number): void => {
    if (len === 0) {
      if (byte === PERCENT || byte === BACKSLASH || byte === AMPERSAND) {
        seq[0] = byte;
        len = 1;
        start = pos;
      } else emit(byte, pos, pos + 1);
      return;
    }
    seq[len++] = byte;
    const result = parseEscape(seq, len);
    if (result === INCOMPLETE) return;
    const from = start;
    const held = len;
    len = 0;
    start = -1;
    if (result === INVALID) {
      replay(from, held);
      return;
    }
    if (result >= BYTE) emit(result - BYTE, from, pos + 1);
    else emitCodePoint(result, from, pos + 1);
  };

  // Not an escape after all: its first byte is plain text, and the rest is read again (it may
  // start an escape of its own, as in "%%41").
  const replay = (from: number, held: number): void => {
    const rest = seq.slice(1, held);
    emit(seq[0] as number, from, from + 1);
    for (let i = 0; i < rest.length; i++) feed(rest[i] as number, from + 1 + i);
  };

  return {
    feed,
    end() {
      while (len > 0) {
        const from = start;
        const held = len;
        len = 0;
        start = -1;
        replay(from, held);
      }
    },
    pendingStart: () => (len === 0 ? -1 : start),
  };
}

/** Reads `seq[0..len)` as the start of an escape: INCOMPLETE, INVALID, or what it decodes to. */
function parseEscape(seq: Uint8Array, len: number): number {
  const first = seq[0] as number;
  if (first === PERCENT) {
    for (let i = 1; i < len; i++) if (hexValue(seq[i] as number) < 0) return INVALID;
    return len < 3 ? INCOMPLETE : BYTE + hexNumber(seq, 1, 3);
  }
  if (first === BACKSLASH) return parseBackslash(seq, len);
  return parseReference(seq, len);
}

function parseBackslash(seq: Uint8Array, len: number): number {
  const kind = seq[1] as number;
  if (kind !== 0x75) return SHORT_ESCAPES[kind] as number; // not "u": one character
  const high = unit(seq, 2, len);
  if (high < 0) return high;
  if (high < 0xd800 || high > 0xdfff) return high;
  if (high > 0xdbff) return INVALID; // a low surrogate alone
  // A high surrogate must be followed by "\u" and a low surrogate.
  if (len > 6 && seq[6] !== BACKSLASH) return INVALID;
  if (len > 7 && seq[7] !== 0x75) return INVALID;
  const low = unit(seq, 8, len);
  if (low < 0) return low;
  if (low < 0xdc00 || low > 0xdfff) return INVALID;
  return 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
}

/** Four hex digits at `at`, INCOMPLETE while fewer have arrived. */
function unit(seq: Uint8Array, at: number, len: number): number {
  for (let i = at; i < Math.min(len, at + 4); i++) if (hexValue(seq[i] as number) < 0) return INVALID;
  return len < at + 4 ? INCOMPLETE : hexNumber(seq, at, at + 4);
}

function parseReference(seq: Uint8Array, len: number): number {
  if (len < 2) return INCOMPLETE;
  if (seq[1] !== 0x23) {
    // A named reference: only the five that escape markup, spelled in lower case.
    const held = len - 1;
    let incomplete = false;
    for (const [name, value] of NAMED) {
      if (held > name.length) continue;
      let i = 0;
      while (i < held && seq[1 + i] === name[i]) i++;
      if (i < held) continue;
      if (held === name.length) return value;
      incomplete = true;
    }
    return incomplete ? INCOMPLETE : INVALID;
  }
  const hex = len > 2 && (seq[2] === 0x78 || seq[2] === 0x58);
  const digitsFrom = hex ? 3 : 2;
  // At most 8 digits (leading zeros included): enough for U+10FFFF, short enough to stay bounded.
  let value = 0;
  for (let i = digitsFrom; i < len; i++) {
    const c = seq[i] as number;
    if (c === SEMICOLON) {
      if (i === digitsFrom) return INVALID;
      return value > 0x10ffff || (value >= 0xd800 && value <= 0xdfff) || value === 0 ? INVALID : value;
    }
    const d = hex ? hexValue(c) : c >= 0x30 && c <= 0x39 ? c - 0x30 : -1;
    if (d < 0 || i - digitsFrom >= 8) return INVALID;
    value = value * (hex ? 16 : 10) + d;
  }
  return INCOMPLETE;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  return -1;
}

function hexNumber(seq: Uint8Array, from: number, to: number): number {
  let value = 0;
  for (let i = from; i < to; i++) value = value * 16 + hexValue(seq[i] as number);
  return value;
}
