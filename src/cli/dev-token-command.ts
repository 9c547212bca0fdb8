import { parseArgs } from "node:util";
import { loadOrCreateDevIssuerKey, signDevToken } from "../auth/dev-issuer.js";
import type { CliIo } from "./cli-io.js";
import { devPath, readDevState, refuseProduction } from "./dev-environment.js";

/** Prints a DEV-ONLY user access token signed by the dev issuer's key. */
export async function runDevToken(args: string[], io: CliIo): Promise<number> {
  refuseProduction("keybroker dev-token", io.env);
  const { values } = parseArgs({
    args,
    options: {
      sub: { type: "string" },
      "expires-in": { type: "string", default: "3600" },
    },
  });
  if (values.sub === undefined || values.sub === "") {
    io.stderr.write("usage: keybroker dev-token --sub SUBJECT [--expires-in SECONDS]\n");
    return 2;
  }
  const state = await readDevState();
  const key = await loadOrCreateDevIssuerKey(devPath("issuer-key.json"));
  const token = await signDevToken(key, {
    issuer: state.issuer,
    audience: state.audience,
    subject: values.sub,
    permissions: [state.permission],
    expiresInSec: Number(values["expires-in"]),
  });
  io.stdout.write(`${token}\n`);
  return 0;
}
