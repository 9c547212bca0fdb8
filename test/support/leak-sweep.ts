import { randomBytes } from "node:crypto";
import fs from "node:fs";
import { format } from "node:util";
import { parseCallerKey } from "../../src/auth/caller-key-format.js";

/**
 * The canary sweep (catalogue E50, SPEC I7). Tests register the secrets, tokens, caller keys
 * and subjects they hand the broker; the scanner then looks for every form a leak could take
 * in text: raw, base64 (padded or not, at any byte alignment, so a canary embedded in a longer
 * encoded value is still found), base64url, hex in either case, URL- and form-encoded, and
 * JSON-escaped. A hit names the canary's label and the form, never the value, so a report of a
 * leak does not repeat it.
 */

/** A value that must never appear anywhere the broker writes. */
export interface Canary {
  readonly label: string;
  readonly value: string;
}

/** One leak: which canary, in which form, found where. */
export interface LeakHit {
  readonly label: string;
  readonly form: string;
  readonly where: string;
}

export interface CanaryRegistry {
  /** Registers `value` (at least 8 characters, so it cannot match by chance) and returns it. */
  register(label: string, value: string): string;
  readonly canaries: readonly Canary[];
  /** Every registered canary, in any form, that occurs in `text`. */
  scan(where: string, text: string): LeakHit[];
}

const MIN_CANARY_CHARS = 8;
// An aligned base64 fragment shorter than this could occur by chance in unrelated output.
const MIN_BASE64_FRAGMENT_CHARS = 12;

/** A distinctive random value for a canary: the label keeps a hit readable. */
export function makeCanary(label: string): string {
  return `kbcanary${label.replaceAll(/[^A-Za-z0-9]/g, "")}${randomBytes(12).toString("hex")}`;
}

/**
 * Base64 text that occurs whenever `bytes` appear inside a longer base64-encoded value, for each
 * of the three byte alignments: the full 3-byte groups made of canary bytes alone.
 */
function alignedBase64(bytes: Buffer, alphabet: "base64" | "base64url"): string[] {
  const out: string[] = [];
  for (let start = 0; start < 3; start++) {
    const groups = Math.floor((bytes.length - start) / 3);
    const fragment = bytes.subarray(start, start + groups * 3).toString(alphabet);
    if (fragment.length >= MIN_BASE64_FRAGMENT_CHARS) out.push(fragment);
  }
  return out;
}

/** Every form of `value` the scanner looks for, each with the name of its form. */
export function leakForms(value: string): ReadonlyArray<{ readonly form: string; readonly text: string }> {
  const bytes = Buffer.from(value, "utf8");
  const forms: Array<{ form: string; text: string }> = [
    { form: "raw", text: value },
    { form: "base64", text: bytes.toString("base64") },
    { form: "base64url", text: bytes.toString("base64url") },
    { form: "hex", text: bytes.toString("hex") },
    { form: "HEX", text: bytes.toString("hex").toUpperCase() },
    { form: "url-encoded", text: encodeURIComponent(value) },
    { form: "form-encoded", text: new URLSearchParams({ v: value }).toString().slice(2) },
    { form: "json-escaped", text: JSON.stringify(value).slice(1, -1) },
    ...alignedBase64(bytes, "base64").map((text) => ({ form: "base64 (embedded)", text })),
    ...alignedBase64(bytes, "base64url").map((text) => ({ form: "base64url (embedded)", text })),
  ];
  const seen = new Set<string>();
  return forms.filter((f) => f.text.length > 0 && !seen.has(f.text) && seen.add(f.text));
}

export function createCanaryRegistry(): CanaryRegistry {
  const canaries: Canary[] = [];
  const forms = new Map<string, ReadonlyArray<{ form: string; text: string }>>();
  return {
    canaries,
    register(label, value) {
      if (value.length < MIN_CANARY_CHARS) {
        throw new Error(`canary ${label} is shorter than ${MIN_CANARY_CHARS} characters`);
      }
      if (!forms.has(value)) {
        canaries.push({ label, value });
        forms.set(value, leakForms(value));
      }
      return value;
    },
    scan(where, text) {
      const hits: LeakHit[] = [];
      for (const canary of canaries) {
        for (const { form, text: needle } of forms.get(canary.value) ?? []) {
          if (text.includes(needle)) hits.push({ label: canary.label, form, where });
        }
      }
      return hits;
    },
  };
}

/** A readable, value-free summary of leak hits for an assertion message. */
export function describeLeaks(hits: readonly LeakHit[]): string {
  return hits.map((h) => `${h.label} (${h.form}) in ${h.where}`).join("; ");
}

/**
 * The worker-wide registry the teardown hook (test/support/leak-sweep-hook.ts) scans at the end
 * of every test file. Tests add the canaries they create; the hook adds nothing by itself.
 */
export const suiteCanaries: CanaryRegistry = createCanaryRegistry();

/** Registers a canary for the end-of-file sweep of this worker's output; returns the value. */
export function registerCanary(label: string, value: string): string {
  return suiteCanaries.register(label, value);
}

// Shapes that are credentials whatever test made them: a JWT (three base64url parts, header and
// payload JSON objects) and a broker caller key whose checksum verifies. The raw-marker pattern
// catches the suite's own canary constants (`CANARY-…`, `…-canary-…`, `canarybearer…`).
const JWT_SHAPE = /eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*/;
const CALLER_KEY_SHAPE = /kbk_[0-9A-Za-z]{38}/g;
const CANARY_MARKERS: ReadonlyArray<readonly [string, string]> = [
  ["canary marker", "canary"],
  ["canary marker (hex)", Buffer.from("canary").toString("hex")],
  ["CANARY marker (hex)", Buffer.from("CANARY").toString("hex")],
];

/** Credential-shaped strings and canary markers in `text`, whoever registered them (or nobody). */
export function structuralLeaks(where: string, text: string): LeakHit[] {
  const hits: LeakHit[] = [];
  if (JWT_SHAPE.test(text)) hits.push({ label: "a JWT", form: "raw", where });
  for (const match of text.matchAll(CALLER_KEY_SHAPE)) {
    if (parseCallerKey(match[0]) !== undefined) {
      hits.push({ label: "a caller key with a valid checksum", form: "raw", where });
      break;
    }
  }
  const lower = text.toLowerCase();
  for (const [label, marker] of CANARY_MARKERS) {
    if (lower.includes(marker.toLowerCase())) hits.push({ label, form: "raw", where });
  }
  return hits;
}

/** Everything a worker process writes to stdout/stderr, by any route, while installed. */
export interface OutputCapture {
  text(): string;
  uninstall(): void;
}

type Write = typeof process.stdout.write;

/**
 * Tees this process's output: `process.stdout/stderr.write`, the `console` methods (which vitest
 * reroutes) and direct `fs.write`/`fs.writeSync` on fds 1 and 2 (pino's default destination
 * writes there through sonic-boom, bypassing `process.stdout`). Output still goes where it went.
 */
export function installOutputCapture(): OutputCapture {
  const chunks: string[] = [];
  const record = (chunk: unknown): void => {
    if (typeof chunk === "string") chunks.push(chunk);
    else if (chunk instanceof Uint8Array) chunks.push(Buffer.from(chunk).toString("utf8"));
  };
  const restore: Array<() => void> = [];

  for (const stream of [process.stdout, process.stderr]) {
    const original = stream.write;
    const teed = function (this: NodeJS.WriteStream, chunk: unknown, ...rest: unknown[]) {
      record(chunk);
      return (original as (...args: unknown[]) => boolean).call(this, chunk, ...rest);
    } as Write;
    stream.write = teed;
    restore.push(() => {
      if (stream.write === teed) stream.write = original;
    });
  }

  const consoleMethods = ["log", "info", "warn", "error", "debug", "trace"] as const;
  for (const name of consoleMethods) {
    const original = console[name];
    const teed = (...args: unknown[]): void => {
      record(format(...args));
      original.apply(console, args);
    };
    console[name] = teed;
    restore.push(() => {
      if (console[name] === teed) console[name] = original;
    });
  }

  const originalWriteSync = fs.writeSync;
  const writeSync = ((fd: number, data: unknown, ...rest: unknown[]) => {
    if (fd === 1 || fd === 2) record(data);
    return (originalWriteSync as (...args: unknown[]) => number)(fd, data, ...rest);
  }) as typeof fs.writeSync;
  fs.writeSync = writeSync;
  restore.push(() => {
    if (fs.writeSync === writeSync) fs.writeSync = originalWriteSync;
  });

  const originalWrite = fs.write;
  const write = ((fd: number, data: unknown, ...rest: unknown[]) => {
    if (fd === 1 || fd === 2) record(data);
    (originalWrite as (...args: unknown[]) => void)(fd, data, ...rest);
  }) as typeof fs.write;
  // Keep fs.write's util.promisify behaviour (a custom-promisify symbol) on the wrapper.
  for (const symbol of Object.getOwnPropertySymbols(originalWrite)) {
    const descriptor = Object.getOwnPropertyDescriptor(originalWrite, symbol);
    if (descriptor !== undefined) Object.defineProperty(write, symbol, descriptor);
  }
  fs.write = write;
  restore.push(() => {
    if (fs.write === write) fs.write = originalWrite;
  });

  return {
    text: () => chunks.join(""),
    uninstall() {
      for (const undo of restore.reverse()) undo();
    },
  };
}
