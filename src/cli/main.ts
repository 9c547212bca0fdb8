import { ConfigError } from "../config/config.js";
import { isBrokerError } from "../errors.js";
import { runAudit } from "./audit-command.js";
import { runCallerKeys } from "./caller-keys-command.js";
import { type CliIo, processIo } from "./cli-io.js";
import { runDev } from "./dev-command.js";
import { runDevToken } from "./dev-token-command.js";
import { runKeys } from "./keys-command.js";
import { runMigrate } from "./migrate-command.js";
import { runOAuthApps } from "./oauth-apps-command.js";
import { runRewrap } from "./rewrap-command.js";
import { runServe } from "./serve-command.js";
import { runUser } from "./user-command.js";

const USAGE = `keybroker <command>

  serve                      run the broker (production: configuration from the environment)
  dev                        run the broker with embedded DEV-ONLY defaults (npm start)
  migrate                    apply database migrations (as the owner; KEYBROKER_RUNTIME_DB_ROLE: grant serve's role)
  caller-keys create --name N --scopes s1,s2 [--expires-in-days D] [--client-cert FILE.pem]
  caller-keys list
  caller-keys revoke <id>
  caller-keys rotate <id> [--overlap-hours H]   new key, same name and scopes; old one expires after H
  oauth-apps set <provider> --client-id ID    the broker's OAuth client; secret on stdin, never argv
  oauth-apps rotate <provider> [--client-id ID]  new client secret on stdin
  oauth-apps list
  user rotate-key (--user-ref HEX | --sub S)   new data key for one user, every secret re-sealed
  user shred (--user-ref HEX | --sub S) --yes  destroy a user's data key and secrets for good
  audit verify               walk the hash chain, then check it against the newest signed checkpoint;
                             exit 1 naming the first bad row, a cut, wipe or rewrite
  audit query [--action A] [--user-ref HEX] [--caller-key-id ID] [--since ISO] [--limit N]
  dev-token --sub SUBJECT    print a user access token from the dev issuer (dev only)
  rewrap --to <key ARN|alias|local:N> [--dry-run] [--batch-size N] [--concurrency N] [--rate N]
                             re-wrap every data key and the pepper under another master key, online
  keys status                users (and the pepper) per master key
`;

/** Every command receives the same IO: the environment it reads, and where it writes. */
const commands: Record<string, (args: string[], io: CliIo) => Promise<number>> = {
  serve: runServe,
  dev: runDev,
  migrate: runMigrate,
  "caller-keys": runCallerKeys,
  "dev-token": runDevToken,
  rewrap: runRewrap,
  keys: runKeys,
  audit: runAudit,
  user: runUser,
  "oauth-apps": runOAuthApps,
};

async function main(argv: string[], io: CliIo): Promise<number> {
  const [name, ...args] = argv;
  const command = name === undefined ? undefined : commands[name];
  if (command === undefined) {
    io.stderr.write(USAGE);
    return name === undefined || name === "help" || name === "--help" ? 0 : 2;
  }
  try {
    return await command(args, io);
  } catch (err) {
    // Config and domain errors carry safe, helpful messages; anything else is summarised.
    if (err instanceof ConfigError || isBrokerError(err)) {
      io.stderr.write(`keybroker ${name}: ${err.message}\n`);
      return 1;
    }
    io.stderr.write(`keybroker ${name}: ${err instanceof Error ? err.message : "failed"}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2), processIo());
