import { openOpsContext } from "../app/ops-context.js";
import { loadDatabaseConfig } from "../config/config.js";
import { parseAcceptedMasterKeys } from "../keys/key-ids.js";
import { formatKeyStatus, keyIdsInUse, readKeyStatus } from "../rotation/key-status.js";
import { JSON_OPTION, parseCommandArgs, UsageError } from "./cli-args.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec, DATABASE_HELP } from "./command-spec.js";
import { DEV_OPTION, openLockedOps, opsEnvironment } from "./ops-environment.js";

const HELP =
  "Usage: keybroker keys status [--json]\n\n" +
  "How many users' data keys, OAuth apps' client secrets and the pepper each master key wraps,\n" +
  "read from the database alone (no KMS call). A key may be disabled once its counts are zero.\n" +
  "With KEYBROKER_ACCEPTED_MASTER_KEYS set, keys outside it are marked retired.\n\n" +
  DATABASE_HELP +
  "\nOptions:\n" +
  COMMON_HELP;

export const keysCommand: CommandSpec = {
  name: "keys",
  summary: "users, OAuth apps and the pepper per master key",
  help: HELP,
  subcommands: ["status"],
  flags: ["--dev", "--json"],
  run: runKeys,
};

/** `keybroker keys status`: users' data keys, OAuth apps and the pepper per master key. */
export async function runKeys(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  if (action !== "status") {
    throw new UsageError(action === undefined ? "an action is required" : `unknown action: ${action}`);
  }
  const { values } = parseCommandArgs(rest, { ...DEV_OPTION, ...JSON_OPTION });
  const env = opsEnvironment("keys", io.env, values.dev);
  const acceptedList = env.KEYBROKER_ACCEPTED_MASTER_KEYS;
  const accepted = acceptedList === undefined ? undefined : new Set(parseAcceptedMasterKeys(acceptedList));
  const database = loadDatabaseConfig(env);
  const ops = await openLockedOps("keys", database, () =>
    openOpsContext({ database }, createCommandLogger(io), { schema: "as-is" }),
  );
  try {
    const status = await readKeyStatus(ops.database.db);
    if (values.json) {
      const keys = keyIdsInUse(status).map((keyId) => ({
        keyId,
        users: status.users.get(keyId) ?? 0,
        oauthApps: status.oauthApps.get(keyId) ?? 0,
        pepper: status.pepperKeyId === keyId,
        retired: accepted !== undefined && !accepted.has(keyId),
      }));
      io.stdout.write(`${JSON.stringify({ keys })}\n`);
    } else {
      io.stdout.write(formatKeyStatus(status, accepted));
    }
    return 0;
  } finally {
    await ops.close();
  }
}
