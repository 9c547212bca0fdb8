import { loadOrCreateDevIssuerKey, signDevToken } from "../auth/dev-issuer.js";
import { JSON_OPTION, parseCommandArgs } from "./cli-args.js";
import type { CliIo } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec } from "./command-spec.js";
import { devPath, readDevState, refuseProduction } from "./dev-environment.js";

const HELP =
  "Usage: keybroker dev-token --sub SUBJECT [--expires-in SECONDS] [--json]\n\n" +
  "DEVELOPMENT ONLY. Prints a user access token the running dev broker accepts, signed by the dev\n" +
  "issuer's key in KEYBROKER_DEV_DIR (default .keybroker-dev/). Refuses NODE_ENV=production.\n\n" +
  "Options:\n" +
  COMMON_HELP;

export const devTokenCommand: CommandSpec = {
  name: "dev-token",
  summary: "print a user access token from the dev issuer (dev only)",
  help: HELP,
  subcommands: [],
  flags: ["--sub", "--expires-in", "--json"],
  run: runDevToken,
};

/** Prints a DEV-ONLY user access token signed by the dev issuer's key. */
export async function runDevToken(args: string[], io: CliIo): Promise<number> {
  refuseProduction("keybroker dev-token", io.env);
  const { values } = parseCommandArgs(args, {
    sub: { type: "string" },
    "expires-in": { type: "string", default: "3600" },
    ...JSON_OPTION,
  });
  if (values.sub === undefined || values.sub === "") {
    io.stderr.write("usage: keybroker dev-token --sub SUBJECT [--expires-in SECONDS]\n");
    return 2;
  }
  const state = await readDevState(io.env);
  const key = await loadOrCreateDevIssuerKey(devPath(io.env, "issuer-key.json"));
  const expiresInSec = Number(values["expires-in"]);
  const token = await signDevToken(key, {
    issuer: state.issuer,
    audience: state.audience,
    subject: values.sub,
    permissions: [state.permission],
    expiresInSec,
  });
  // The token is what this command exists to print (a dev token, for a dev broker).
  io.stdout.write(values.json ? `${JSON.stringify({ token, expiresInSec })}\n` : `${token}\n`);
  return 0;
}
