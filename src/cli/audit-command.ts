import { parseArgs } from "node:util";
import { openOpsContext } from "../app/ops-context.js";
import { createAuditReader } from "../audit/audit-reader.js";
import { loadDatabaseConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";

const USER_REF_HEX = /^[0-9a-f]{64}$/;

/** `keybroker audit verify` (exit 1 and the first bad row when the chain is broken) and `audit query`. */
export async function runAudit(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  const { values } = parseArgs({
    args: rest,
    options: {
      action: { type: "string" },
      "user-ref": { type: "string" },
      "caller-key-id": { type: "string" },
      since: { type: "string" },
      limit: { type: "string", default: "100" },
      "after-seq": { type: "string" },
    },
  });
  const ops = await openOpsContext({ database: loadDatabaseConfig(io.env) }, createCommandLogger(io), {
    schema: "as-is",
  });
  const { database } = ops;
  const reader = createAuditReader({ db: database.db });
  try {
    if (action === "verify") {
      const verdict = await reader.verify();
      if (verdict.ok) {
        io.stdout.write(`audit chain intact: ${verdict.rows} rows, last seq ${verdict.lastSeq}\n`);
        return 0;
      }
      io.stdout.write(
        `audit chain BROKEN at seq ${verdict.firstBadSeq} (${verdict.reason}); ${verdict.rows} rows checked before it\n`,
      );
      return 1;
    }
    if (action === "query") {
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
      for (const event of events) io.stdout.write(`${JSON.stringify(event)}\n`);
      return 0;
    }
    io.stderr.write(
      "usage: keybroker audit verify | audit query [--action A] [--user-ref HEX] [--limit N]\n",
    );
    return 2;
  } finally {
    await ops.close();
  }
}
