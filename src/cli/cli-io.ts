import { createLogger, type Logger } from "../log/logger.js";

/** Where a command's text goes; a TTY gets progress redrawn in place. */
export interface Output {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

/** Where every command reads its environment and writes; main.ts passes the process's, tests their own. */
export interface CliIo {
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly stdout: Output;
  readonly stderr: Output;
  /** Where a command reads a secret it must never take from argv (oauth-apps); absent: none. */
  readonly stdin?: AsyncIterable<Buffer | string>;
}

export function processIo(): CliIo {
  return { env: process.env, stdout: process.stdout, stderr: process.stderr, stdin: process.stdin };
}

/**
 * The logger of an operator command: to stderr, so stdout carries only the command's output
 * (a caller key shown once, JSON lines, a report) and can be piped; quiet unless LOG_LEVEL says.
 */
export function createCommandLogger(io: CliIo): Logger {
  return createLogger({ level: io.env.LOG_LEVEL ?? "warn", destination: io.stderr });
}
