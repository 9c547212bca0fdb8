import type { CliIo } from "./cli-io.js";

/** One `keybroker <name>` command: how it is described, completed and run. */
export interface CommandSpec {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The whole `--help` text (ends with a newline). */
  readonly help: string;
  /** Sub-commands (`caller-keys list`...) and flags, for shell completion. */
  readonly subcommands: readonly string[];
  readonly flags: readonly string[];
  run(args: string[], io: CliIo): Promise<number>;
}

/** The lines every help text ends with. */
export const COMMON_HELP =
  "  --json            print the result as JSON (no secret but what the command exists to show)\n  -h, --help        this help\n";

/**
 * How operator commands find the database: never an in-memory one, which would "apply" or
 * "create" into nothing and vanish on exit.
 */
export const DATABASE_HELP =
  "Database: DATABASE_URL (Postgres), or an embedded data directory named explicitly:\n" +
  "  --dev               the dev broker's (KEYBROKER_DEV_DIR, default .keybroker-dev/; stop it first)\n" +
  "  KEYBROKER_ALLOW_EMBEDDED_DATABASE=1 KEYBROKER_PGLITE_DIR=<dir>\n";
