import { readFile } from "node:fs/promises";
import type { AuditLog } from "../audit/audit-log.js";
import type { Config } from "../config/config.js";
import type { Logger } from "../log/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { createAlertSink } from "../signals/alert-sink.js";
import { type CallerKeySuspender, createCallerKeySuspender } from "../signals/caller-key-suspender.js";
import { createMisuseMonitor, type MisuseMonitor } from "../signals/misuse-monitor.js";
import { createWebhookSender } from "../signals/webhook-sender.js";
import { suspendCallerKey } from "../store/caller-keys.repository.js";
import type { DatabaseHandle } from "../store/database.js";
import type { Lifecycle } from "./lifecycle.js";

export interface SignalsDeps {
  readonly config: Pick<Config, "alerts">;
  readonly database: DatabaseHandle;
  readonly audit: AuditLog;
  readonly metrics: Pick<Metrics, "misuseSignal" | "alertWebhookDelivery">;
  readonly logger: Logger;
}

export interface Signals {
  readonly monitor: MisuseMonitor;
  readonly suspender: CallerKeySuspender;
}

/**
 * Misuse signals: the monitor the call path feeds, the sink it raises into (metric, audit row,
 * signed webhook), and the optional suspension of a caller key. Torn down before the audit log.
 */
export async function createSignals(lifecycle: Lifecycle, deps: SignalsDeps): Promise<Signals> {
  const { config, database, audit, metrics, logger } = deps;
  const suspender = createCallerKeySuspender({
    suspend: (id, reason, at) => suspendCallerKey(database.db, id, reason, at),
    audit,
    logger,
  });
  // Bounded: with the database down the writes retry for a while, and shutdown must not wait on them.
  lifecycle.defer("caller key suspensions", () =>
    Promise.race([suspender.idle(), new Promise<void>((resolve) => setTimeout(resolve, 2_000).unref())]),
  );
  const hook = config.alerts.webhook;
  let webhook: ReturnType<typeof createWebhookSender> | undefined;
  if (hook !== undefined) {
    // Trailing whitespace is the file's, not the secret's: `echo secret > file` must work.
    const secret = Buffer.from((await readFile(hook.secretFile, "utf8")).trim(), "utf8");
    if (secret.length < 16)
      throw new Error("KEYBROKER_ALERT_WEBHOOK_SECRET_FILE: the secret needs 16 bytes or more");
    const ca = hook.caFile === undefined ? undefined : await readFile(hook.caFile);
    webhook = createWebhookSender({
      url: new URL(hook.url),
      secret,
      ca,
      logger,
      onDelivery: (outcome) => metrics.alertWebhookDelivery(outcome),
    });
    lifecycle.defer("alert webhook", () => webhook?.close());
  }
  const raise = createAlertSink({
    audit,
    metrics,
    logger,
    webhook,
    suspendOn: new Set(config.alerts.suspendOn),
    suspender,
  });
  return { monitor: createMisuseMonitor({ raise, logger }), suspender };
}
