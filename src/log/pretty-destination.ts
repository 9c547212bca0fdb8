import type { DestinationStream } from "pino";

/** Where the formatted lines go (a TTY or a pipe; `process.stdout` in dev). */
export interface TextOutput {
  write(text: string): unknown;
}

const LEVELS: Record<string, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO ",
  warn: "WARN ",
  error: "ERROR",
  fatal: "FATAL",
};
// Fields every line has, shown in the line's head instead of the tail.
const HEAD_FIELDS = new Set(["level", "time", "msg", "service", "pid", "hostname"]);
const MAX_VALUE_CHARS = 200;

/**
 * A pino destination that prints each line for a person: `12:00:01.123 INFO  msg key=value`.
 * For `keybroker dev` only; production keeps JSON lines for the log pipeline. It formats the
 * line pino has already serialised and redacted, so redaction is the same in both formats, and
 * it adds no dependency (pino-pretty would bring ~15 packages into a secrets broker's tree).
 */
export function createPrettyDestination(out: TextOutput): DestinationStream {
  return {
    write(line: string) {
      out.write(`${formatLine(line)}\n`);
    },
  };
}

export function formatLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line.trimEnd();
  }
  const time = typeof entry.time === "string" ? entry.time.slice(11, 23) : "";
  const level = LEVELS[String(entry.level)] ?? String(entry.level).toUpperCase();
  const parts = [time, level, typeof entry.msg === "string" ? entry.msg : ""].filter((p) => p !== "");
  for (const [key, value] of Object.entries(entry)) {
    if (HEAD_FIELDS.has(key) || value === undefined) continue;
    parts.push(`${key}=${formatValue(value)}`);
  }
  return parts.join(" ");
}

function formatValue(value: unknown): string {
  if (typeof value === "object" && value !== null && "stack" in value && "message" in value) {
    // An error: its type and message on the line, its stack below it (dev: where it came from).
    const { type, message, stack } = value as { type?: unknown; message?: unknown; stack?: unknown };
    return `${String(type ?? "Error")}: ${String(message)}${typeof stack === "string" ? `\n${indent(stack)}` : ""}`;
  }
  const text = typeof value === "string" ? value : JSON.stringify(value);
  const shown = text.length > MAX_VALUE_CHARS ? `${text.slice(0, MAX_VALUE_CHARS)}…` : text;
  return /[\s"=]/.test(shown) && typeof value === "string" ? JSON.stringify(shown) : shown;
}

function indent(stack: string): string {
  return stack
    .split("\n")
    .slice(1)
    .map((l) => `    ${l.trim()}`)
    .join("\n");
}
