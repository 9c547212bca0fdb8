import { ConfigError } from "../config/config.js";
import { isBrokerError } from "../errors.js";
import { auditCommand } from "./audit-command.js";
import { callerKeysCommand } from "./caller-keys-command.js";
import { UsageError, wantsHelp } from "./cli-args.js";
import type { CliIo } from "./cli-io.js";
import type { CommandSpec } from "./command-spec.js";
import { createCompletionCommand } from "./completion-command.js";
import { devCommand } from "./dev-command.js";
import { devTokenCommand } from "./dev-token-command.js";
import { keysCommand } from "./keys-command.js";
import { migrateCommand } from "./migrate-command.js";
import { oauthAppsCommand } from "./oauth-apps-command.js";
import { rewrapCommand } from "./rewrap-command.js";
import { serveCommand } from "./serve-command.js";
import { userCommand } from "./user-command.js";
import { keybrokerVersion } from "./version.js";

/** Every command, in the order `keybroker --help` lists them. */
export const COMMANDS: readonly CommandSpec[] = [
  serveCommand,
  devCommand,
  migrateCommand,
  callerKeysCommand,
  oauthAppsCommand,
  userCommand,
  auditCommand,
  rewrapCommand,
  keysCommand,
  devTokenCommand,
  createCompletionCommand(() => COMMANDS),
];

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return (
    "Usage: keybroker <command> [options]\n\n" +
    "Commands:\n" +
    COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}\n`).join("") +
    "\n" +
    "Options:\n" +
    "  -h, --help        help (also after any command: keybroker caller-keys --help)\n" +
    "  -v, --version     the version\n\n" +
    "Operator commands read the same environment as the broker; docs/operations.md has the runbooks.\n"
  );
}

const VERSION_FLAGS = new Set(["--version", "-v", "version"]);

/**
 * The CLI, without the process: main.ts passes argv and the process's streams, tests their own.
 * Help and version are answered before any command code runs, so `migrate --help` migrates
 * nothing and `dev --help` starts nothing. Exit codes: 0 ok, 1 failed, 2 wrong usage.
 */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined) {
    io.stderr.write(usage());
    return 2;
  }
  if (VERSION_FLAGS.has(name)) {
    const version = keybrokerVersion();
    io.stdout.write(
      args.includes("--json")
        ? `${JSON.stringify({ version, node: process.versions.node })}\n`
        : `keybroker ${version} (node ${process.versions.node})\n`,
    );
    return 0;
  }
  if (name === "help" || name === "--help" || name === "-h") {
    const topic = name === "help" ? COMMANDS.find((c) => c.name === args[0]) : undefined;
    io.stdout.write(topic?.help ?? usage());
    return 0;
  }
  const command = COMMANDS.find((c) => c.name === name);
  if (command === undefined) {
    io.stderr.write(`keybroker: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  if (wantsHelp(args)) {
    io.stdout.write(command.help);
    return 0;
  }
  try {
    return await command.run(args, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`keybroker ${name}: ${err.message}\n(see keybroker ${name} --help)\n`);
      return 2;
    }
    // Config and domain errors carry safe, helpful messages; anything else is summarised.
    if (err instanceof ConfigError || isBrokerError(err)) {
      io.stderr.write(`keybroker ${name}: ${err.message}\n`);
      return 1;
    }
    io.stderr.write(`keybroker ${name}: ${err instanceof Error ? err.message : "failed"}\n`);
    return 1;
  }
}
