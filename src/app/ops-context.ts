import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import type { DatabaseConfig, DatabaseHandle } from "../store/database.js";
import { type Audit, openAudit } from "./audit.js";
import type { ConfiguredKeyring } from "./keyring-from-config.js";
import { openConfiguredKeyring } from "./keys.js";
import { createLifecycle, type Lifecycle, unwindOnFailure } from "./lifecycle.js";
import { openStorage, prepareSchema, type SchemaPolicy } from "./storage.js";

/** What an operator command works on, built by the broker's own steps (app/storage.ts...). */
export interface OpsContext {
  readonly database: DatabaseHandle;
  /** Migrations applied while opening (schema policy "migrate"); empty otherwise. */
  readonly migrationsApplied: readonly string[];
  /** Releases everything opened, newest first; safe to call twice. */
  close(): Promise<void>;
}

/** The context of a command that also touches keys or writes audit rows (user, rewrap). */
export interface KeyedOpsContext extends OpsContext {
  /** The configured keyring, as the broker opens it (no retired-key guard: rotation needs old keys). */
  readonly keyring: ConfiguredKeyring;
  readonly audit: Audit;
}

export interface OpsContextOptions {
  /**
   * `as-is` skips the check (one query less per short-lived command): the command's own
   * queries then fail if the schema is behind. rewrap, which runs long, requires it current.
   */
  readonly schema: SchemaPolicy | "as-is";
}

/**
 * The database alone, for commands that need nothing else (migrate, caller-keys, audit,
 * keys status): they run with only the database configured.
 */
export function openOpsContext(
  config: { readonly database: DatabaseConfig },
  logger: Logger,
  options: OpsContextOptions,
): Promise<OpsContext> {
  const lifecycle = createLifecycle({ logger });
  return unwindOnFailure(lifecycle, () => openDatabasePart(lifecycle, config, logger, options));
}

/** The database and the audit log, for a command that changes something without touching keys. */
export function openAuditedOpsContext(
  config: { readonly database: DatabaseConfig },
  logger: Logger,
  options: OpsContextOptions,
): Promise<OpsContext & { readonly audit: Audit }> {
  const lifecycle = createLifecycle({ logger });
  return unwindOnFailure(lifecycle, async () => {
    const base = await openDatabasePart(lifecycle, config, logger, options);
    return { ...base, audit: openAudit(lifecycle, { database: base.database, logger }) };
  });
}

/** The database, the configured keyring and the audit log, torn down together. */
export function openKeyedOpsContext(
  config: Pick<Config, "database" | "keyring" | "relaxations">,
  logger: Logger,
  options: OpsContextOptions,
): Promise<KeyedOpsContext> {
  const lifecycle = createLifecycle({ logger });
  return unwindOnFailure(lifecycle, async () => {
    const base = await openDatabasePart(lifecycle, config, logger, options);
    const keyring = await openConfiguredKeyring(lifecycle, config);
    const audit = openAudit(lifecycle, { database: base.database, logger });
    return { ...base, keyring, audit };
  });
}

async function openDatabasePart(
  lifecycle: Lifecycle,
  config: { readonly database: DatabaseConfig },
  logger: Logger,
  options: OpsContextOptions,
): Promise<OpsContext> {
  const database = await openStorage(lifecycle, { config: config.database, logger });
  const migrationsApplied =
    options.schema === "as-is" ? [] : await prepareSchema(database, options.schema, logger);
  return { database, migrationsApplied, close: () => lifecycle.stop() };
}
