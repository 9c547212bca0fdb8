import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { parseArgs } from "node:util";
import { createCallerKeyAdmin } from "../admin/caller-key-admin.js";
import { openAuditedOpsContext } from "../app/ops-context.js";
import { clientCertificateSha256 } from "../auth/client-certificate.js";
import { CALLER_SCOPES } from "../auth/identity.js";
import { loadDatabaseConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";

const DAY_MS = 86_400_000;

export async function runCallerKeys(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      name: { type: "string" },
      scopes: { type: "string" },
      "expires-in-days": { type: "string" },
      "client-cert": { type: "string" },
      "overlap-hours": { type: "string", default: "24" },
    },
    allowPositionals: true,
  });
  // Checked before the database opens: a wrong file fails at once, and nothing is created.
  const certFile = action === "create" ? values["client-cert"] : undefined;
  const clientCertSha256 = certFile === undefined ? null : clientCertificateSha256(await readPem(certFile));
  const ops = await openAuditedOpsContext({ database: loadDatabaseConfig(io.env) }, createCommandLogger(io), {
    schema: "as-is",
  });
  try {
    const admin = createCallerKeyAdmin({ db: ops.database.db });
    switch (action) {
      case "create": {
        const days = values["expires-in-days"] === undefined ? undefined : Number(values["expires-in-days"]);
        if (days !== undefined && !(Number.isInteger(days) && days > 0)) {
          throw new BrokerError("invalid_argument", "--expires-in-days must be a positive integer");
        }
        const created = await admin.create({
          name: values.name ?? "",
          scopes: (values.scopes ?? "").split(",").filter((s) => s !== ""),
          expiresAt: days === undefined ? null : new Date(Date.now() + days * DAY_MS),
          clientCertSha256,
        });
        io.stdout.write(
          `${created.key}\n\nThis key is shown once. Store it in the main app's secret store now.\n` +
            `id=${created.summary.id} name=${created.summary.name} scopes=${created.summary.scopes.join(",")}` +
            ` expires=${created.summary.expiresAt?.toISOString() ?? "never"}` +
            ` client-cert=${certBinding(created.summary.clientCertSha256)}\n`,
        );
        return 0;
      }
      case "list": {
        for (const key of await admin.list()) {
          const state =
            key.revokedAt !== null
              ? "revoked"
              : key.expiresAt !== null && key.expiresAt < new Date()
                ? "expired"
                : key.suspendedAt !== null
                  ? `suspended(${key.suspendedReason ?? "unknown"})`
                  : "active";
          io.stdout.write(
            `${key.id}\t${key.name}\tkbk_…${key.last4}\t${key.scopes.join(",")}\t${state}\t` +
              `last used ${key.lastUsedAt?.toISOString() ?? "never"}\tclient-cert=${certBinding(key.clientCertSha256)}\n`,
          );
        }
        return 0;
      }
      case "revoke": {
        const id = positionals[0];
        if (id === undefined) throw new BrokerError("invalid_argument", "usage: caller-keys revoke <id>");
        await admin.revoke(id);
        io.stdout.write(`revoked ${id}\n`);
        return 0;
      }
      case "reinstate": {
        const id = positionals[0];
        if (id === undefined) throw new BrokerError("invalid_argument", "usage: caller-keys reinstate <id>");
        // Audited like an admin RPC: the attempt is committed first, so an unaudited reinstatement
        // cannot happen (I8); the outcome row follows.
        const actor = { requestId: `cli_${randomUUID()}`, callerKeyId: null, userRef: null };
        await ops.audit.audited.run(
          actor,
          { action: "caller_key.reinstate", target: id, sensitive: true },
          () => admin.reinstate(id),
        );
        await ops.audit.log.flush();
        io.stdout.write(`reinstated ${id}\n`);
        return 0;
      }
      case "rotate": {
        const id = positionals[0];
        const hours = Number(values["overlap-hours"]);
        if (id === undefined || !Number.isFinite(hours)) {
          throw new BrokerError("invalid_argument", "usage: caller-keys rotate <id> [--overlap-hours H]");
        }
        const rotated = await admin.rotate(id, Math.round(hours * 3600));
        io.stdout.write(
          `${rotated.key}\n\nThe new key is shown once. Deploy it to the main app; the old key (${id}) ` +
            `stops working at ${rotated.oldKeyExpiresAt.toISOString()}.\nnew id=${rotated.summary.id}\n`,
        );
        return 0;
      }
      default:
        io.stderr.write(
          "usage: keybroker caller-keys create --name N --scopes s1,s2 [--expires-in-days D] [--client-cert FILE.pem]" +
            "|list|revoke|rotate|reinstate\n" +
            `  scopes: ${CALLER_SCOPES.join(", ")}\n` +
            "  (proxy:call allows every non-dangerous class; proxy:transfer, proxy:credentials and\n" +
            "   proxy:webhooks must be given explicitly)\n",
        );
        return 2;
    }
  } finally {
    await ops.close();
  }
}

/** The certificate file, with a message that names it when it cannot be read. */
async function readPem(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    throw new BrokerError("invalid_argument", `--client-cert: cannot read ${file}`, { cause: err });
  }
}

/** In `openssl x509 -noout -fingerprint -sha256` notation, so operators can compare the two. */
function certBinding(sha256: Buffer | null): string {
  return sha256 === null
    ? "none"
    : `sha256:${(sha256.toString("hex").toUpperCase().match(/../g) ?? []).join(":")}`;
}
