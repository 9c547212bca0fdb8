import { type AuditCheckpointer, createAuditCheckpointer } from "../audit/audit-checkpointer.js";
import type { AuditCheckpointKeyConfig, Config } from "../config/config.js";
import { createKmsClient, resolveKmsKeyArn } from "../keys/aws-kms-keyring.js";
import { createAwsKmsMacKey } from "../keys/aws-kms-mac-key.js";
import { openLocalMacKey } from "../keys/local-mac-key.js";
import type { MacKey } from "../keys/mac-key.js";
import type { Logger } from "../log/logger.js";
import type { DatabaseHandle } from "../store/database.js";
import type { Lifecycle } from "./lifecycle.js";

/**
 * The checkpoint MAC key the config names; its KMS client (or derived key material) is released
 * when the lifecycle stops, and by a failed start like everything else.
 */
export async function openCheckpointMacKey(
  lifecycle: Lifecycle,
  key: AuditCheckpointKeyConfig,
): Promise<MacKey> {
  if (key.kind === "local") {
    const macKey = await openLocalMacKey(key.file);
    lifecycle.defer("audit checkpoint key", () => macKey.close());
    return macKey;
  }
  const client = createKmsClient({
    region: key.region,
    maxAttempts: key.maxAttempts,
    requestTimeoutMs: key.attemptTimeoutMs,
    ...(key.endpoint === undefined ? {} : { endpoint: key.endpoint }),
  });
  lifecycle.defer("audit checkpoint key", () => client.destroy());
  // Checkpoints record the key ARN, and verification trusts only that ARN: resolve an alias once.
  return createAwsKmsMacKey({ client, keyArn: await resolveKmsKeyArn(client, key.keyId) });
}

export interface AuditCheckpointsDeps {
  readonly config: Config["auditCheckpoints"];
  readonly database: DatabaseHandle;
  readonly logger: Logger;
}

/**
 * Signs the audit chain in the background (M1), and the key that verifies it (AdminService
 * VerifyAudit); undefined when no checkpoint key is configured.
 * Registered before the audit log, so on stop the log flushes first and the last checkpoint
 * then covers every row this process wrote.
 */
export async function openAuditCheckpoints(
  lifecycle: Lifecycle,
  deps: AuditCheckpointsDeps,
): Promise<{ readonly checkpointer: AuditCheckpointer; readonly macKey: MacKey } | undefined> {
  const { config, database, logger } = deps;
  if (config.key === undefined) return undefined;
  const macKey = await openCheckpointMacKey(lifecycle, config.key);
  // Fail the start on a key that cannot make MACs (a symmetric key, no GenerateMac grant), not
  // with a warning every 10 s while the trail goes unsigned.
  await macKey.generateMac(Buffer.from("keybroker/audit-checkpoint-probe"));
  const checkpointer = createAuditCheckpointer({
    db: database.db,
    macKey,
    logger,
    intervalMs: config.intervalMs,
    rows: config.rows,
    exportToLog: config.exportToLog,
  });
  lifecycle.defer("audit checkpoints", () => checkpointer.close());
  return { checkpointer, macKey };
}
