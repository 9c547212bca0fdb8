import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { type CallerKeySummary, createCallerKeyAdmin } from "../admin/caller-key-admin.js";
import { openAuditedOpsContext } from "../app/ops-context.js";
import { clientCertificateSha256 } from "../auth/client-certificate.js";
import { CALLER_SCOPES } from "../auth/identity.js";
import { loadDatabaseConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { JSON_OPTION, parseCommandArgs, UsageError } from "./cli-args.js";
import { type CliIo, createCommandLogger } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec, DATABASE_HELP } from "./command-spec.js";
import { DEV_OPTION, openLockedOps, opsEnvironment } from "./ops-environment.js";

const DAY_MS = 86_400_000;
const ACTIONS = ["create", "list", "revoke", "rotate", "reinstate"] as const;

const HELP =
  "Usage: keybroker caller-keys <action> [options]\n\n" +
  "The keys apps present as x-keybroker-key. A new key is printed once; only its SHA-256 is stored.\n\n" +
  "  create --name N --scopes s1,s2 [--expires-in-days D] [--client-cert FILE.pem]\n" +
  "  list                              id, name, last 4, scopes, state, expiry, last use (recorded at\n" +
  "                                    most once a minute per replica), client certificate\n" +
  "  revoke <id>                       refused from the next call on\n" +
  "  rotate <id> [--overlap-hours H]   a new key, same name and scopes; the old one expires after H (24)\n" +
  "  reinstate <id>                    lift a misuse-signal suspension (audited)\n\n" +
  `Scopes: ${CALLER_SCOPES.join(", ")}\n` +
  "  (proxy:call allows every non-dangerous class; proxy:transfer, proxy:credentials and\n" +
  "   proxy:webhooks must be given explicitly)\n\n" +
  DATABASE_HELP +
  "\nOptions:\n" +
  COMMON_HELP;

export const callerKeysCommand: CommandSpec = {
  name: "caller-keys",
  summary: "create, list, revoke, rotate or reinstate caller keys",
  help: HELP,
  subcommands: ACTIONS,
  flags: ["--name", "--scopes", "--expires-in-days", "--client-cert", "--overlap-hours", "--dev", "--json"],
  run: runCallerKeys,
};

export async function runCallerKeys(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  if (!ACTIONS.includes(action as (typeof ACTIONS)[number])) {
    throw new UsageError(action === undefined ? "an action is required" : `unknown action: ${action}`);
  }
  const { values, positionals } = parseCommandArgs(
    rest,
    {
      name: { type: "string" },
      scopes: { type: "string" },
      "expires-in-days": { type: "string" },
      "client-cert": { type: "string" },
      "overlap-hours": { type: "string", default: "24" },
      ...DEV_OPTION,
      ...JSON_OPTION,
    },
    { positionals: action === "create" || action === "list" ? 0 : 1 },
  );
  const json = values.json === true;
  // Checked before the database opens: a wrong file fails at once, and nothing is created.
  const certFile = action === "create" ? values["client-cert"] : undefined;
  const clientCertSha256 = certFile === undefined ? null : clientCertificateSha256(await readPem(certFile));
  const env = opsEnvironment("caller-keys", io.env, values.dev);
  const database = loadDatabaseConfig(env);
  const ops = await openLockedOps("caller-keys", database, () =>
    openAuditedOpsContext({ database }, createCommandLogger(io), { schema: "as-is" }),
  );
  const print = (value: unknown, text: string) => io.stdout.write(json ? `${JSON.stringify(value)}\n` : text);
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
        const s = created.summary;
        // The key itself is what `create` exists to show, once; nothing else here is secret.
        print(
          { key: created.key, ...describeKey(s) },
          `${created.key}\n\nThis key is shown once. Store it in the main app's secret store now.\n` +
            `id=${s.id} name=${s.name} scopes=${s.scopes.join(",")}` +
            ` expires=${s.expiresAt?.toISOString() ?? "never"}` +
            ` client-cert=${certBinding(s.clientCertSha256)}\n`,
        );
        return 0;
      }
      case "list": {
        const keys = await admin.list();
        if (json) {
          io.stdout.write(`${JSON.stringify(keys.map(describeKey))}\n`);
          return 0;
        }
        for (const key of keys) {
          io.stdout.write(
            `${key.id}\t${key.name}\tkbk_…${key.last4}\t${key.scopes.join(",")}\t${stateOf(key)}\t` +
              `expires ${key.expiresAt?.toISOString() ?? "never"}\t` +
              `last used ${key.lastUsedAt?.toISOString() ?? "never"}\tclient-cert=${certBinding(key.clientCertSha256)}\n`,
          );
        }
        return 0;
      }
      case "revoke": {
        const id = requireId(positionals[0], "revoke");
        await admin.revoke(id);
        print({ id, revoked: true }, `revoked ${id}\n`);
        return 0;
      }
      case "reinstate": {
        const id = requireId(positionals[0], "reinstate");
        // Audited like an admin RPC: the attempt is committed first, so an unaudited reinstatement
        // cannot happen (I8); the outcome row follows.
        const actor = { requestId: `cli_${randomUUID()}`, callerKeyId: null, userRef: null };
        await ops.audit.audited.run(
          actor,
          { action: "caller_key.reinstate", target: id, sensitive: true },
          () => admin.reinstate(id),
        );
        await ops.audit.log.flush();
        print({ id, reinstated: true }, `reinstated ${id}\n`);
        return 0;
      }
      default: {
        const id = requireId(positionals[0], "rotate");
        const hours = Number(values["overlap-hours"]);
        if (!Number.isFinite(hours)) throw new UsageError("--overlap-hours must be a number");
        const rotated = await admin.rotate(id, Math.round(hours * 3600));
        print(
          {
            key: rotated.key,
            ...describeKey(rotated.summary),
            oldKeyId: id,
            oldKeyExpiresAt: rotated.oldKeyExpiresAt.toISOString(),
          },
          `${rotated.key}\n\nThe new key is shown once. Deploy it to the main app; the old key (${id}) ` +
            `stops working at ${rotated.oldKeyExpiresAt.toISOString()}.\nnew id=${rotated.summary.id}\n`,
        );
        return 0;
      }
    }
  } finally {
    await ops.close();
  }
}

function requireId(id: string | undefined, action: string): string {
  if (id === undefined) throw new UsageError(`usage: keybroker caller-keys ${action} <id>`);
  return id;
}

function stateOf(key: CallerKeySummary): string {
  if (key.revokedAt !== null) return "revoked";
  if (key.expiresAt !== null && key.expiresAt < new Date()) return "expired";
  if (key.suspendedAt !== null) return `suspended(${key.suspendedReason ?? "unknown"})`;
  return "active";
}

/** A key's listing, as JSON: its last four characters, never the key or its hash. */
function describeKey(key: CallerKeySummary) {
  return {
    id: key.id,
    name: key.name,
    last4: key.last4,
    scopes: key.scopes,
    state: stateOf(key),
    createdAt: key.createdAt.toISOString(),
    expiresAt: key.expiresAt?.toISOString() ?? null,
    lastUsedAt: key.lastUsedAt?.toISOString() ?? null,
    revokedAt: key.revokedAt?.toISOString() ?? null,
    suspendedAt: key.suspendedAt?.toISOString() ?? null,
    suspendedReason: key.suspendedReason,
    clientCert: key.clientCertSha256 === null ? null : certBinding(key.clientCertSha256),
  };
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
