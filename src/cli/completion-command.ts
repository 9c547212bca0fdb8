import { parseCommandArgs, UsageError } from "./cli-args.js";
import type { CliIo } from "./cli-io.js";
import type { CommandSpec } from "./command-spec.js";

const HELP =
  "Usage: keybroker completion <bash|zsh>\n\n" +
  "Prints a shell completion script for commands, actions and flags. Install it with:\n" +
  "  bash:  keybroker completion bash > ~/.local/share/bash-completion/completions/keybroker\n" +
  "         (or: source <(keybroker completion bash) in ~/.bashrc)\n" +
  "  zsh:   keybroker completion zsh > ~/.zfunc/_keybroker   (with ~/.zfunc in fpath; restart the shell)\n" +
  "         (or: source <(keybroker completion zsh) in ~/.zshrc, after compinit)\n\n" +
  "Options:\n  -h, --help        this help\n";

const GLOBAL_FLAGS = ["--help", "--version"];

/** `keybroker completion bash|zsh`, generated from the command table (so it never drifts). */
export function createCompletionCommand(commands: () => readonly CommandSpec[]): CommandSpec {
  return {
    name: "completion",
    summary: "print a bash or zsh completion script",
    help: HELP,
    subcommands: ["bash", "zsh"],
    flags: [],
    async run(args: string[], io: CliIo) {
      const { positionals } = parseCommandArgs(args, {}, { positionals: 1 });
      const shell = positionals[0];
      if (shell === "bash") io.stdout.write(bashCompletion(commands()));
      else if (shell === "zsh") io.stdout.write(zshCompletion(commands()));
      else
        throw new UsageError(shell === undefined ? "name a shell: bash or zsh" : `unknown shell: ${shell}`);
      return 0;
    },
  };
}

/** Names and flags are ours ([a-z0-9-]); checked so a future one cannot break out of the script. */
function word(text: string): string {
  if (!/^-{0,2}[a-z0-9][a-z0-9-]*$/.test(text)) throw new Error(`not a completion word: ${text}`);
  return text;
}

export function bashCompletion(commands: readonly CommandSpec[]): string {
  const cases = commands
    .map(
      (c) =>
        `    ${word(c.name)}) subs="${c.subcommands.map(word).join(" ")}"; flags="${[...c.flags, "--help"].map(word).join(" ")}" ;;`,
    )
    .join("\n");
  return `# keybroker bash completion (keybroker completion bash)
_keybroker() {
  local cur="\${COMP_WORDS[COMP_CWORD]}"
  local subs="" flags=""
  if [ "$COMP_CWORD" -eq 1 ]; then
    COMPREPLY=($(compgen -W "${commands.map((c) => word(c.name)).join(" ")} ${GLOBAL_FLAGS.join(" ")}" -- "$cur"))
    return
  fi
  case "\${COMP_WORDS[1]}" in
${cases}
  esac
  if [ "$COMP_CWORD" -eq 2 ] && [ -n "$subs" ] && [[ "$cur" != -* ]]; then
    COMPREPLY=($(compgen -W "$subs" -- "$cur"))
  else
    COMPREPLY=($(compgen -W "$flags" -- "$cur"))
  fi
}
complete -F _keybroker keybroker
`;
}

export function zshCompletion(commands: readonly CommandSpec[]): string {
  // _describe wants "name:description"; a colon or quote in a summary must not end the entry.
  const described = commands
    .map((c) => `    '${word(c.name)}:${c.summary.replaceAll("'", "").replaceAll(":", "\\:")}'`)
    .join("\n");
  const cases = commands
    .map(
      (c) =>
        `    ${word(c.name)})\n` +
        `      if (( CURRENT == 3 )) && [[ -n "${c.subcommands.map(word).join(" ")}" && $PREFIX != -* ]]; then\n` +
        `        compadd -- ${c.subcommands.map(word).join(" ")}\n` +
        "      else\n" +
        `        compadd -- ${[...c.flags, "--help"].map(word).join(" ")}\n` +
        "      fi ;;",
    )
    .join("\n");
  return `#compdef keybroker
# keybroker zsh completion (keybroker completion zsh)
_keybroker() {
  local -a commands
  commands=(
${described}
  )
  if (( CURRENT == 2 )); then
    _describe 'command' commands
    compadd -- ${GLOBAL_FLAGS.join(" ")}
    return
  fi
  case $words[2] in
${cases}
  esac
}
if [[ "\${zsh_eval_context[-1]}" == loadautofunc ]]; then
  _keybroker "$@"
else
  compdef _keybroker keybroker
fi
`;
}
