import { type ParseArgsConfig, parseArgs } from "node:util";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** A mistake in how a command was called: the CLI prints it with a pointer to --help, exit 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** `-h`/`--help` anywhere before `--`: help wins over everything, so a command never half-runs. */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const token of argv) {
    if (token === "--") return false;
    if (token === "-h" || token === "--help") return true;
  }
  return false;
}

/** Flags every command that prints data accepts. */
export const JSON_OPTION = { json: { type: "boolean", default: false } } as const;

/**
 * node:util parseArgs, strict: an unknown flag, a missing value or a stray positional is a
 * UsageError naming it, never silently ignored (an ignored `--dry-run` typo would run for real).
 */
export function parseCommandArgs<O extends Options>(
  args: readonly string[],
  options: O,
  config: { readonly positionals?: number } = {},
) {
  let parsed: ReturnType<
    typeof parseArgs<{ args: string[]; options: O; allowPositionals: true; strict: true }>
  >;
  try {
    parsed = parseArgs({ args: [...args], options, allowPositionals: true, strict: true });
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : "invalid arguments");
  }
  const allowed = config.positionals ?? 0;
  if (parsed.positionals.length > allowed) {
    throw new UsageError(`unexpected argument: ${parsed.positionals[allowed]}`);
  }
  return parsed;
}
