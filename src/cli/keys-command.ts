import { loadDatabaseConfig } from "../config/config.js";
import { parseAcceptedMasterKeys } from "../keys/key-ids.js";
import { createLogger } from "../log/logger.js";
import { formatKeyStatus, readKeyStatus } from "../rotation/key-status.js";
import { openDatabase } from "../store/database.js";
import type { CommandIo } from "./rewrap-command.js";

const processIo: CommandIo = { env: process.env, stdout: process.stdout, stderr: process.stderr };

/**
 * `keybroker keys status`: how many users' data keys (and the pepper) each master key wraps,
 * read from the database alone (no KMS call). A key may be disabled once its count is zero.
 * With KEYBROKER_ACCEPTED_MASTER_KEYS set, keys outside it are marked retired.
 */
export async function runKeys(args: string[], io: CommandIo = processIo): Promise<number> {
  if (args[0] !== "status" || args.length > 1) {
    io.stderr.write("usage: keybroker keys status\n");
    return 2;
  }
  const acceptedList = io.env.KEYBROKER_ACCEPTED_MASTER_KEYS;
  const accepted = acceptedList === undefined ? undefined : new Set(parseAcceptedMasterKeys(acceptedList));
  const logger = createLogger({ level: io.env.LOG_LEVEL ?? "warn", destination: io.stderr });
  const database = await openDatabase(loadDatabaseConfig(io.env), logger);
  try {
    io.stdout.write(formatKeyStatus(await readKeyStatus(database.db), accepted));
    return 0;
  } finally {
    await database.close();
  }
}
