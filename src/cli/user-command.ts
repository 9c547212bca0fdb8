import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { createUserShredder } from "../admin/user-shredder.js";
import { openKeyringFromConfig } from "../app/keyring-from-config.js";
import { createAuditLog } from "../audit/audit-log.js";
import { createAuditedRunner } from "../audit/audited-operation.js";
import { loadConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { loadOrCreatePepper } from "../keys/pepper.js";
import { deriveUserRef } from "../keys/user-ref.js";
import { createLogger } from "../log/logger.js";
import { rotateUserDataKey } from "../rotation/user-key-rotation.js";
import { openDatabase } from "../store/database.js";

const USER_REF_HEX = /^[0-9a-f]{64}$/;
const USAGE = "usage: keybroker user rotate-key|shred (--user-ref HEX | --sub SUBJECT) [--yes]\n";

/**
 * `keybroker user rotate-key`: a new data key for one user, every secret version re-sealed
 * under it in one transaction. `keybroker user shred --yes`: destroys the user's data key and
 * secrets for good. Both are audited like the AdminService RPCs. A running broker's cached
 * copy of the old key is never used for a different wrapped key (the cache is keyed by it).
 */
export async function runUser(args: string[]): Promise<number> {
  const [action, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: {
      "user-ref": { type: "string" },
      sub: { type: "string" },
      yes: { type: "boolean", default: false },
    },
  });
  if (
    (action !== "rotate-key" && action !== "shred") ||
    (values["user-ref"] === undefined) === (values.sub === undefined)
  ) {
    process.stderr.write(USAGE);
    return 2;
  }
  if (values["user-ref"] !== undefined && !USER_REF_HEX.test(values["user-ref"])) {
    throw new BrokerError("invalid_argument", "--user-ref must be 64 lowercase hex characters");
  }
  if (action === "shred" && !values.yes) {
    throw new BrokerError("invalid_argument", "shredding is irreversible: add --yes");
  }
  const config = loadConfig(process.env);
  const logger = createLogger({ level: config.logLevel });
  const database = await openDatabase(config.database, logger);
  const { keyring, close } = await openKeyringFromConfig(config);
  const audit = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
  try {
    let userRef: Buffer;
    if (values.sub !== undefined) {
      const pepper = await loadOrCreatePepper(database.db, keyring);
      userRef = deriveUserRef(pepper, config.auth.issuer, values.sub);
      pepper.fill(0);
    } else {
      userRef = Buffer.from(values["user-ref"] ?? "", "hex");
    }
    const actor = { requestId: `cli-${randomUUID()}`, callerKeyId: null, userRef };
    const audited = createAuditedRunner({ audit, logger });
    if (action === "shred") {
      const shredder = createUserShredder({ db: database.db, userDataKeys: { forget: () => {} } });
      const destroyed = await audited.run(
        actor,
        { action: "user.shred", sensitive: true, resultDetail: (n) => ({ count: n }) },
        () => shredder.shred(userRef),
      );
      process.stdout.write(`shredded user ${userRef.toString("hex")}: ${destroyed} secret(s) destroyed\n`);
      return 0;
    }
    const signal = AbortSignal.timeout(60_000);
    const rotated = await audited.run(
      actor,
      {
        action: "rewrap.step",
        sensitive: true,
        resultDetail: (r) => ({ dataKeyVersion: r.dataKeyVersion, count: r.versionsResealed }),
      },
      () => rotateUserDataKey({ db: database.db, keyring, userRef, signal }),
    );
    process.stdout.write(
      `rotated the data key of user ${userRef.toString("hex")}: version ${rotated.dataKeyVersion}, ` +
        `${rotated.versionsResealed} secret version(s) re-sealed\n`,
    );
    return 0;
  } finally {
    await audit.close();
    close();
    await database.close();
  }
}
