import { openCheckpointMacKey } from "../app/audit-checkpoints.js";
import { createLifecycle } from "../app/lifecycle.js";
import { openOpsContext } from "../app/ops-context.js";
import { type AuditCheckpointVerdict, verifyAgainstCheckpoint } from "../audit/audit-checkpoint-verify.js";
import { createAuditReader } from "../audit/audit-reader.js";
import { loadAuditVerifyConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { JSON_OPTION, parseCommandArgs, UsageError } from "./cli-args.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec, DATABASE_HELP } from "./command-spec.js";
import { DEV_OPTION, openLockedOps, opsEnvironment } from "./ops-environment.js";

const USER_REF_HEX = /^[0-9a-f]{64}$/;

const HELP =
  "Usage: keybroker audit <verify|query> [options]\n\n" +
  "  verify    walk the hash chain, then check it against the newest signed checkpoint (with a\n" +
  "            keyring configured: KEYBROKER_KEYRING...); exit 1 naming the first bad row, a cut,\n" +
  "            wipe, rewrite or forged checkpoint\n" +
  "  query [--action A] [--user-ref HEX] [--caller-key-id ID] [--since ISO] [--after-seq N] [--limit N]\n" +
  "            one JSON object per line (--json: one array)\n\n" +
  DATABASE_HELP +
  "\nOptions:\n" +
  COMMON_HELP;

export const auditCommand: CommandSpec = {
  name: "audit",
  summary: "verify the audit trail, or query it",
  help: HELP,
  subcommands: ["verify", "query"],
  flags: [
    "--action",
    "--user-ref",
    "--caller-key-id",
    "--since",
    "--limit",
    "--after-seq",
    "--dev",
    "--json",
  ],
  run: runAudit,
};

/** One line about the newest checkpoint, and whether it shows tampering (M1). */
function describeCheckpoint(verdict: AuditCheckpointVerdict): { line: string; ok: boolean } {
  if (verdict.status === "none") {
    return { line: `no signed checkpoint yet: ${verdict.uncoveredRows} rows not covered`, ok: true };
  }
  const at = `the checkpoint of seq ${verdict.checkpointSeq} signed at ${verdict.signedAt.toISOString()}`;
  switch (verdict.status) {
    case "covered":
      return { line: `${at} holds; ${verdict.uncoveredRows} rows not yet covered`, ok: true };
    case "forged":
      return { line: `${at} does NOT verify under the checkpoint key: forged or edited`, ok: false };
    case "wiped":
      return { line: `audit trail WIPED: ${at} covers rows, and none is left`, ok: false };
    case "cut":
      return { line: `audit trail CUT: ${at} covers rows that are missing from the end`, ok: false };
    case "rewritten":
      return {
        line: `audit trail REWRITTEN: row ${verdict.checkpointSeq} or one before it is not what ${at} covers`,
        ok: false,
      };
  }
}

/**
 * `keybroker audit verify`: the hash chain (exit 1 and the first bad row when broken), then the
 * chain against its newest signed checkpoint (exit 1 on a cut, wipe, rewrite or forged
 * checkpoint), when a keyring is configured to check it with. `audit query` prints rows.
 */
export async function runAudit(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  if (action !== "verify" && action !== "query") {
    throw new UsageError(action === undefined ? "an action is required" : `unknown action: ${action}`);
  }
  const { values } = parseCommandArgs(rest, {
    action: { type: "string" },
    "user-ref": { type: "string" },
    "caller-key-id": { type: "string" },
    since: { type: "string" },
    limit: { type: "string", default: "100" },
    "after-seq": { type: "string" },
    ...DEV_OPTION,
    ...JSON_OPTION,
  });
  const json = values.json === true;
  const env = opsEnvironment("audit", io.env, values.dev);
  const config = loadAuditVerifyConfig(env);
  const logger = createCommandLogger(io);
  const ops = await openLockedOps("audit", config.database, () =>
    openOpsContext({ database: config.database }, logger, { schema: "as-is" }),
  );
  const { database } = ops;
  const reader = createAuditReader({ db: database.db });
  try {
    if (action === "verify") {
      const verdict = await reader.verify();
      const lines = [
        verdict.ok
          ? `audit chain intact: ${verdict.rows} rows, last seq ${verdict.lastSeq}`
          : `audit chain BROKEN at seq ${verdict.firstBadSeq} (${verdict.reason}); ${verdict.rows} rows checked before it`,
      ];
      let checkpoint: AuditCheckpointVerdict | null = null;
      let ok = verdict.ok;
      if (config.checkpointKey === undefined) {
        lines.push("checkpoints NOT checked: no keyring configured (KEYBROKER_KEYRING)");
      } else {
        const keys = createLifecycle({ logger });
        try {
          const macKey = await openCheckpointMacKey(keys, config.checkpointKey);
          checkpoint = await verifyAgainstCheckpoint(ops.database.db, macKey);
        } finally {
          await keys.stop();
        }
        const described = describeCheckpoint(checkpoint);
        lines.push(described.line);
        ok = ok && described.ok;
      }
      io.stdout.write(
        json ? `${JSON.stringify({ ok, chain: verdict, checkpoint })}\n` : `${lines.join("\n")}\n`,
      );
      return ok ? 0 : 1;
    }
    const userRef = values["user-ref"];
    if (userRef !== undefined && !USER_REF_HEX.test(userRef)) {
      throw new BrokerError("invalid_argument", "--user-ref must be 64 lowercase hex characters");
    }
    const events = await reader.query({
      limit: Number(values.limit),
      ...(values["after-seq"] === undefined ? {} : { afterSeq: Number(values["after-seq"]) }),
      ...(userRef === undefined ? {} : { userRef: Buffer.from(userRef, "hex") }),
      ...(values.action === undefined ? {} : { action: values.action }),
      ...(values["caller-key-id"] === undefined ? {} : { callerKeyId: values["caller-key-id"] }),
      ...(values.since === undefined ? {} : { since: new Date(values.since) }),
    });
    // One JSON object per line: greppable, and caller text cannot forge a line (it is JSON-escaped).
    if (json) io.stdout.write(`${JSON.stringify(events)}\n`);
    else for (const event of events) io.stdout.write(`${JSON.stringify(event)}\n`);
    return 0;
  } finally {
    await ops.close();
  }
}
