import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { createUserShredder } from "../admin/user-shredder.js";
import { openKeyedOpsContext } from "../app/ops-context.js";
import { loadConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { loadOrCreatePepper } from "../keys/pepper.js";
import { deriveUserRef } from "../keys/user-ref.js";
import { rotateUserDataKey } from "../rotation/user-key-rotation.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";

const USER_REF_HEX = /^[0-9a-f]{64}$/;
const USAGE = "usage: keybroker user rotate-key|shred (--user-ref HEX | --sub SUBJECT) [--yes]\n";

/**
 * `keybroker user rotate-key`: a new data key for one user, every secret version re-sealed
 * under it in one transaction. `keybroker user shred --yes`: destroys the user's data key and
 * secrets for good. Both are audited like the AdminService RPCs. A running broker's cached
 * copy of the old key is never used for a different wrapped key (the cache is keyed by it).
 */
export async function runUser(args: string[], io: CliIo): Promise<number> {
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
    io.stderr.write(USAGE);
    return 2;
  }
  if (values["user-ref"] !== undefined && !USER_REF_HEX.test(values["user-ref"])) {
    throw new BrokerError("invalid_argument", "--user-ref must be 64 lowercase hex characters");
  }
  if (action === "shred" && !values.yes) {
    throw new BrokerError("invalid_argument", "shredding is irreversible: add --yes");
  }
  const config = loadConfig(io.env);
  const ops = await openKeyedOpsContext(config, createCommandLogger(io), { schema: "as-is" });
  const { database } = ops;
  const { keyring } = ops.keyring;
  const { audited } = ops.audit;
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
    if (action === "shred") {
      const shredder = createUserShredder({ db: database.db, userDataKeys: { forget: () => {} } });
      const destroyed = await audited.run(
        actor,
        { action: "user.shred", sensitive: true, resultDetail: (n) => ({ count: n }) },
        () => shredder.shred(userRef),
      );
      io.stdout.write(`shredded user ${userRef.toString("hex")}: ${destroyed} secret(s) destroyed\n`);
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
    io.stdout.write(
      `rotated the data key of user ${userRef.toString("hex")}: version ${rotated.dataKeyVersion}, ` +
        `${rotated.versionsResealed} secret version(s) re-sealed\n`,
    );
    return 0;
  } finally {
    await ops.close();
  }
}
