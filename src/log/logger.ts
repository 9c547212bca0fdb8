import pino, { type DestinationStream, type Logger } from "pino";

export type { Logger } from "pino";

/**
 * Paths pino blanks out wherever they appear. A backstop only: code must not hand
 * secrets, tokens or raw user ids to the logger in the first place.
 */
const REDACT_PATHS = [
  "authorization",
  "*.authorization",
  "headers.authorization",
  "*.headers.authorization",
  "token",
  "*.token",
  "accessToken",
  "*.accessToken",
  "callerKey",
  "*.callerKey",
  "secret",
  "*.secret",
  "fields",
  "*.fields",
  "plaintext",
  "*.plaintext",
  "password",
  "*.password",
  "sub",
  "*.sub",
];

export interface LoggerOptions {
  readonly level?: string;
  /** Where lines go; tests pass a capturing stream to scan for leaks. */
  readonly destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? "info",
      base: { service: "keybroker" },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: "[REDACTED]" },
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination,
  );
}
