import type { CliIo } from "../../src/cli/cli-io.js";

/** A CliIo whose streams are captured, for running the CLI in-process. */
export function captureCliIo(
  env: Record<string, string | undefined>,
): CliIo & { out(): string; err(): string } {
  const out: string[] = [];
  const err: string[] = [];
  return {
    env,
    stdout: { write: (text: string) => out.push(text) },
    stderr: { write: (text: string) => err.push(text) },
    out: () => out.join(""),
    err: () => err.join(""),
  };
}
