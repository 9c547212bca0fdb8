import { openOpsContext } from "../app/ops-context.js";
import { loadDatabaseConfig } from "../config/config.js";
import { parseAcceptedMasterKeys } from "../keys/key-ids.js";
import { formatKeyStatus, readKeyStatus } from "../rotation/key-status.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";

/**
 * `keybroker keys status`: how many users' data keys (and the pepper) each master key wraps,
 * read from the database alone (no KMS call). A key may be disabled once its count is zero.
 * With KEYBROKER_ACCEPTED_MASTER_KEYS set, keys outside it are marked retired.
 */
export async function runKeys(args: string[], io: CliIo): Promise<number> {
  if (args[0] !== "status" || args.length > 1) {
    io.stderr.write("usage: keybroker keys status\n");
    return 2;
  }
  const acceptedList = io.env.KEYBROKER_ACCEPTED_MASTER_KEYS;
  const accepted = acceptedList === undefined ? undefined : new Set(parseAcceptedMasterKeys(acceptedList));
  const ops = await openOpsContext({ database: loadDatabaseConfig(io.env) }, createCommandLogger(io), {
    schema: "as-is",
  });
  try {
    io.stdout.write(formatKeyStatus(await readKeyStatus(ops.database.db), accepted));
    return 0;
  } finally {
    await ops.close();
  }
}
