import { Writable } from "node:stream";
import { createLogger, type Logger } from "../../src/log/logger.js";

/** A real pino logger whose lines are kept, so tests can scan them for leaks (I7). */
export interface CapturedLogs {
  readonly logger: Logger;
  readonly lines: string[];
  text(): string;
}

export function captureLogs(level = "debug"): CapturedLogs {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(
        ...chunk
          .toString("utf8")
          .split("\n")
          .filter((line) => line !== ""),
      );
      callback();
    },
  });
  return { logger: createLogger({ level, destination: stream }), lines, text: () => lines.join("\n") };
}

/** The forms a leaked value could take in text: raw, base64, base64url, hex, URL-encoded. */
export function encodedForms(value: string): string[] {
  const bytes = Buffer.from(value, "utf8");
  return [
    value,
    bytes.toString("base64"),
    bytes.toString("base64url"),
    bytes.toString("hex"),
    encodeURIComponent(value),
  ];
}

/** Every needle (in every encoded form) that occurs in `haystack`. */
export function findLeaks(haystack: string, needles: readonly string[]): string[] {
  return needles.flatMap((needle) => encodedForms(needle).filter((form) => haystack.includes(form)));
}
