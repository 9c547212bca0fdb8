/**
 * The response scrubber as it was before issue 12 (H1), kept ONLY so bench/sections/scrubber-worst-case.ts
 * can run the old and the new algorithm on the same input in one run. Not used by the broker.
 */
/** Replaces every known encoding of the secrets in a response with `[REDACTED]` (C31). */
export interface Scrubber {
  scrub(data: Uint8Array): Buffer;
  /** For header values, which undici decodes as latin1 (one char per byte). */
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

// Partial base64 alignments are only matched when the secret-only core is this long; shorter
// cores would redact innocent text without hiding anything useful.
const MIN_ALIGNED_CORE = 8;

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The byte strings an upstream might echo a secret as: raw, base64 and base64url (padded,
 * unpadded, and at the two other 3-byte alignments, as when the secret sits inside a longer
 * encoded value such as a Basic credential), hex in both cases, URL-encoded (component, form,
 * RFC 3986; upper- and lower-case escapes) and JSON-escaped.
 */
export function secretVariants(secret: Uint8Array): Buffer[] {
  if (secret.length === 0) return [];
  const raw = Buffer.from(secret);
  // Every encoding below is ASCII except JSON escaping of non-ASCII text, so variants are kept
  // as strings and deduplicated as strings; `decoded` is the raw bytes' own text (if UTF-8).
  const text = new Set<string>();
  const base64 = raw.toString("base64");
  const base64url = raw.toString("base64url");
  const hex = raw.toString("hex");
  text.add(base64).add(base64.replace(/=+$/, ""));
  text.add(base64url).add(`${base64url}${"=".repeat((4 - (base64url.length % 4)) % 4)}`);
  text.add(hex).add(hex.toUpperCase());
  for (const shift of [0, 1, 2]) {
    const padded = shift === 0 ? raw : Buffer.concat([Buffer.alloc(shift), raw]);
    for (const alphabet of ["base64", "base64url"] as const) {
      const core = alignedCore(padded, shift, alphabet);
      if (core.length >= MIN_ALIGNED_CORE) text.add(core);
    }
  }
  let decoded: string | undefined;
  try {
    decoded = strictUtf8.decode(raw);
  } catch {
    decoded = undefined;
  }
  // Unreserved characters encode to themselves in every URL and JSON form: most API keys.
  if (decoded !== undefined && !URL_AND_JSON_SAFE.test(decoded)) {
    const component = encodeURIComponent(decoded);
    const strict = component.replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
    const form = new URLSearchParams({ x: decoded }).toString().slice(2);
    for (const encoded of [component, strict, form]) {
      text.add(encoded).add(encoded.replace(/%[0-9A-F]{2}/g, (e) => e.toLowerCase()));
    }
    const json = JSON.stringify(decoded).slice(1, -1);
    text.add(json).add(json.replace(/\//g, "\\/"));
  }
  if (decoded !== undefined) text.delete(decoded);
  const variants = [raw];
  for (const t of text) if (t.length > 0) variants.push(Buffer.from(t, "utf8"));
  return variants;
}

// Left alone by encodeURIComponent, its strict RFC 3986 form AND form encoding (which escapes "~").
const URL_AND_JSON_SAFE = /^[A-Za-z0-9_.-]*$/;

/**
 * Base64 of the secret when preceded by `shift` unknown bytes and followed by anything: only
 * the characters the secret's bits alone decide. `padded` is the secret after `shift` zero bytes.
 */
function alignedCore(padded: Buffer, shift: number, alphabet: "base64" | "base64url"): string {
  const encoded = padded.toString(alphabet).replace(/=+$/, "");
  const start = [0, 2, 3][shift] ?? 0; // first char made only of secret bits
  const end = Math.floor((padded.length * 8) / 6); // last char made only of secret bits
  return encoded.slice(start, end);
}

export function createScrubber(secrets: readonly Uint8Array[]): Scrubber {
  const patterns = secrets.flatMap((s) => secretVariants(s));
  const maxLength = patterns.reduce((m, p) => Math.max(m, p.length), 0);

  const findIntervals = (buf: Buffer): Array<[number, number]> => {
    const found: Array<[number, number]> = [];
    for (const p of patterns) {
      for (let i = buf.indexOf(p); i !== -1; i = buf.indexOf(p, i + 1)) found.push([i, i + p.length]);
    }
    found.sort((a, b) => a[0] - b[0]);
    // Overlapping matches (a secret inside another's encoding) become one redaction.
    const merged: Array<[number, number]> = [];
    for (const [s, e] of found) {
      const last = merged[merged.length - 1];
      if (last !== undefined && s < last[1]) last[1] = Math.max(last[1], e);
      else merged.push([s, e]);
    }
    return merged;
  };

  const render = (buf: Buffer, intervals: ReadonlyArray<readonly [number, number]>, end: number): Buffer => {
    const parts: Buffer[] = [];
    let at = 0;
    for (const [s, e] of intervals) {
      if (e > end) break;
      parts.push(buf.subarray(at, s), REDACTED);
      at = e;
    }
    parts.push(buf.subarray(at, end));
    return Buffer.concat(parts);
  };

  const scrub = (data: Uint8Array): Buffer => {
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    if (patterns.length === 0) return Buffer.from(buf);
    const intervals = findIntervals(buf);
    return render(buf, intervals, buf.length);
  };

  return {
    scrub,
    scrubText: (text) => scrub(Buffer.from(text, "latin1")).toString("latin1"),
    createStream(): StreamScrubber {
      let carry: Buffer = Buffer.alloc(0);
      return {
        push(chunk: Uint8Array): Buffer {
          if (patterns.length === 0) return Buffer.from(chunk);
          const buf = Buffer.concat([carry, chunk]);
          const intervals = findIntervals(buf);
          // A match starting before `safe` lies wholly inside `buf`, so it was found; bytes from
          // `safe` on may begin a secret that continues in the next chunk and are held back.
          let emitEnd = Math.max(0, buf.length - (maxLength - 1));
          for (const [s, e] of intervals) if (s < emitEnd && e > emitEnd) emitEnd = e;
          const out = render(buf, intervals, emitEnd);
          carry = Buffer.from(buf.subarray(emitEnd));
          return out;
        },
        flush(): Buffer {
          const out = scrub(carry);
          carry = Buffer.alloc(0);
          return out;
        },
      };
    },
  };
}
