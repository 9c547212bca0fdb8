import { randomUUID } from "node:crypto";
import { createUserShredder } from "../admin/user-shredder.js";
import { openKeyedOpsContext } from "../app/ops-context.js";
import { ConfigError, loadKeyedOpsConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { loadOrCreatePepper } from "../keys/pepper.js";
import { deriveUserRef } from "../keys/user-ref.js";
import { rotateUserDataKey } from "../rotation/user-key-rotation.js";
import { JSON_OPTION, parseCommandArgs } from "./cli-args.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec, DATABASE_HELP } from "./command-spec.js";
import { readDevState } from "./dev-environment.js";
import { DEV_OPTION, openLockedOps, opsEnvironment } from "./ops-environment.js";

const USER_REF_HEX = /^[0-9a-f]{64}$/;
const USAGE = "usage: keybroker user rotate-key|shred (--user-ref HEX | --sub SUBJECT) [--yes]\n";

const HELP =
  "Usage: keybroker user <rotate-key|shred> (--user-ref HEX | --sub SUBJECT) [options]\n\n" +
  "  rotate-key   a new data key for one user, every secret version re-sealed under it\n" +
  "  shred --yes  destroy the user's data key and secrets for good (crypto-shred)\n\n" +
  "  --user-ref HEX   the user as audit rows name them (64 hex characters)\n" +
  "  --sub SUBJECT    the user's token subject; needs AUTH0_ISSUER (with --dev: the dev issuer)\n" +
  "Both are audited like the AdminService RPCs. Reads the database and keyring variables.\n\n" +
  DATABASE_HELP +
  "\nOptions:\n" +
  COMMON_HELP;

export const userCommand: CommandSpec = {
  name: "user",
  summary: "rotate one user's data key, or crypto-shred the user",
  help: HELP,
  subcommands: ["rotate-key", "shred"],
  flags: ["--user-ref", "--sub", "--yes", "--dev", "--json"],
  run: runUser,
};

/**
 * `keybroker user rotate-key`: a new data key for one user, every secret version re-sealed
 * under it in one transaction. `keybroker user shred --yes`: destroys the user's data key and
 * secrets for good. Both are audited like the AdminService RPCs. A running broker's cached
 * copy of the old key is never used for a different wrapped key (the cache is keyed by it).
 */
export async function runUser(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  const { values } = parseCommandArgs(rest, {
    "user-ref": { type: "string" },
    sub: { type: "string" },
    yes: { type: "boolean", default: false },
    ...DEV_OPTION,
    ...JSON_OPTION,
  });
  const json = values.json === true;
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
  const env = opsEnvironment("user", io.env, values.dev);
  const config = loadKeyedOpsConfig(env);
  // The subject becomes a user ref as the broker derives it: HMAC(pepper, issuer|sub).
  const issuer = values.sub === undefined ? undefined : await issuerOf(env, values.dev === true);
  const ops = await openLockedOps("user", config.database, () =>
    openKeyedOpsContext(config, createCommandLogger(io), { schema: "as-is" }),
  );
  const { database } = ops;
  const { keyring } = ops.keyring;
  const { audited } = ops.audit;
  try {
    let userRef: Buffer;
    if (values.sub !== undefined) {
      const pepper = await loadOrCreatePepper(database.db, keyring);
      userRef = deriveUserRef(pepper, issuer ?? "", values.sub);
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
      io.stdout.write(
        json
          ? `${JSON.stringify({ userRef: userRef.toString("hex"), shredded: true, secretsDestroyed: destroyed })}\n`
          : `shredded user ${userRef.toString("hex")}: ${destroyed} secret(s) destroyed\n`,
      );
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
      json
        ? `${JSON.stringify({
            userRef: userRef.toString("hex"),
            dataKeyVersion: rotated.dataKeyVersion,
            versionsResealed: rotated.versionsResealed,
          })}\n`
        : `rotated the data key of user ${userRef.toString("hex")}: version ${rotated.dataKeyVersion}, ` +
            `${rotated.versionsResealed} secret version(s) re-sealed\n`,
    );
    return 0;
  } finally {
    await ops.close();
  }
}

/** The issuer `--sub` is read under: AUTH0_ISSUER exactly as `serve` has it, or the dev issuer. */
async function issuerOf(env: CliIo["env"], dev: boolean): Promise<string> {
  if (dev && env.AUTH0_ISSUER === undefined) return (await readDevState(env)).issuer;
  const issuer = env.AUTH0_ISSUER;
  if (issuer === undefined || !URL.canParse(issuer)) {
    throw new ConfigError([
      "AUTH0_ISSUER: required with --sub (exactly as the broker has it), or use --user-ref",
    ]);
  }
  return issuer;
}
