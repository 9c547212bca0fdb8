import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";
import { openKeyedOpsContext } from "../app/ops-context.js";
import { loadConfig } from "../config/config.js";
import { BrokerError } from "../errors.js";
import { createOAuthAppStore, OAUTH_APP_LIMITS } from "../oauth/oauth-app-store.js";
import { loadProviderRegistry } from "../outbound/provider-registry.js";
import type { CliIo } from "./cli-io.js";
import { createCommandLogger } from "./cli-io.js";
import { COMMON_HELP, type CommandSpec, DATABASE_HELP } from "./command-spec.js";

const USAGE =
  "usage: keybroker oauth-apps set <provider> --client-id ID   (client secret on stdin)\n" +
  "       keybroker oauth-apps rotate <provider> [--client-id ID] (new client secret on stdin)\n" +
  "       keybroker oauth-apps list\n";

export const oauthAppsCommand: CommandSpec = {
  name: "oauth-apps",
  summary: "the broker's OAuth client per provider (client secret on stdin, never argv)",
  help:
    `Usage: keybroker oauth-apps set <provider> --client-id ID   (client secret on stdin)\n` +
    "       keybroker oauth-apps rotate <provider> [--client-id ID]\n" +
    "       keybroker oauth-apps list\n\n" +
    "Sets, rotates or lists the OAuth app credentials the broker uses for connections (issue 15).\n" +
    "The client secret is read from stdin only, sealed by the keyring, and set/rotate are audited.\n\n" +
    DATABASE_HELP +
    "\nOptions:\n" +
    COMMON_HELP,
  subcommands: ["set", "rotate", "list"],
  flags: ["--client-id"],
  run: runOAuthApps,
};

/**
 * `keybroker oauth-apps`: the broker's OAuth client per provider (issue 15 item 2). The client
 * secret is read from stdin only: argv is visible to every local user (ps, /proc) and lands in
 * shell history. set and rotate are audited like admin RPCs (the `started` row first, I8).
 */
export async function runOAuthApps(args: string[], io: CliIo): Promise<number> {
  const [action, ...rest] = args;
  const { values, positionals } = parseArgs({
    args: rest,
    options: {
      "client-id": { type: "string" },
      // Declared only to be refused with a message that says why.
      "client-secret": { type: "string" },
    },
    allowPositionals: true,
  });
  if (values["client-secret"] !== undefined) {
    throw new BrokerError(
      "invalid_argument",
      "never pass a client secret on the command line (ps and shell history show it); pipe it on stdin",
    );
  }
  const provider = positionals[0];
  if (
    (action !== "set" && action !== "rotate" && action !== "list") ||
    (action !== "list" && provider === undefined) ||
    (action === "set" && values["client-id"] === undefined)
  ) {
    io.stderr.write(USAGE);
    return 2;
  }
  // Read before anything opens, so a missing secret fails at once and nothing is written.
  const secret = action === "list" ? undefined : await readSecret(io);
  const config = loadConfig(io.env);
  const registry = await loadProviderRegistry(config.providersFile, {
    production: !config.relaxations.includes("loopback_providers"),
  });
  const ops = await openKeyedOpsContext(config, createCommandLogger(io), { schema: "as-is" });
  try {
    const apps = createOAuthAppStore({
      db: ops.database.db,
      keyring: ops.keyring.keyring,
      isOAuthProvider: (id) => registry.get(id)?.definition.oauth !== undefined,
    });
    if (action === "list") {
      for (const app of await apps.list()) {
        io.stdout.write(
          `${app.provider}\tclient-id=${app.clientId}\tversion=${app.version}\tupdated ${app.updatedAt.toISOString()}\n`,
        );
      }
      return 0;
    }
    const id = provider ?? "";
    const actor = { requestId: `cli_${randomUUID()}`, callerKeyId: null, userRef: null };
    const clientId = values["client-id"];
    const summary = await ops.audit.audited.run(
      actor,
      {
        action: action === "set" ? "oauth_app.set" : "oauth_app.rotate",
        target: id,
        sensitive: true,
        detail: { provider: id },
        resultDetail: (s: { version: number }) => ({ secretVersion: s.version }),
      },
      () =>
        action === "set"
          ? apps.set(id, clientId ?? "", secret ?? Buffer.alloc(0))
          : apps.rotate(id, secret ?? Buffer.alloc(0), clientId),
    );
    await ops.audit.log.flush();
    io.stdout.write(
      `${action === "set" ? "set" : "rotated"} ${summary.provider} client-id=${summary.clientId} version=${summary.version}\n`,
    );
    return 0;
  } finally {
    secret?.fill(0);
    await ops.close();
  }
}

/** The client secret from stdin, one line (a trailing newline is not part of it). */
async function readSecret(io: CliIo): Promise<Buffer> {
  if (io.stdin === undefined) throw new BrokerError("invalid_argument", "pipe the client secret on stdin");
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of io.stdin) {
    const bytes = typeof chunk === "string" ? Buffer.from(chunk, "utf8") : chunk;
    size += bytes.length;
    if (size > OAUTH_APP_LIMITS.maxClientSecretBytes + 2) {
      throw new BrokerError(
        "invalid_argument",
        `client secret must be at most ${OAUTH_APP_LIMITS.maxClientSecretBytes} bytes`,
      );
    }
    chunks.push(bytes);
  }
  const all = Buffer.concat(chunks);
  for (const c of chunks) c.fill(0);
  let end = all.length;
  if (end > 0 && all[end - 1] === 0x0a) end -= 1;
  if (end > 0 && all[end - 1] === 0x0d) end -= 1;
  const secret = Buffer.from(all.subarray(0, end));
  all.fill(0);
  if (secret.length === 0)
    throw new BrokerError("invalid_argument", "pipe the client secret on stdin (it was empty)");
  return secret;
}
