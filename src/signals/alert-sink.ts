import { randomUUID } from "node:crypto";
import type { AuditLog } from "../audit/audit-log.js";
import type { Logger } from "../log/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { alertBody } from "./alert-body.js";
import type { CallerKeySuspender } from "./caller-key-suspender.js";
import type { MisuseSignalName, SignalTrip } from "./signal-event.js";
import type { WebhookSender } from "./webhook-sender.js";

export interface AlertSinkDeps {
  readonly audit: Pick<AuditLog, "record">;
  readonly metrics: Pick<Metrics, "misuseSignal">;
  readonly logger: Logger;
  /** Absent when no KEYBROKER_ALERT_WEBHOOK_URL is configured. */
  readonly webhook?: Pick<WebhookSender, "send"> | undefined;
  /** Signals that suspend the caller key that tripped them (KEYBROKER_SUSPEND_ON_SIGNALS; none by default). */
  readonly suspendOn?: ReadonlySet<MisuseSignalName>;
  readonly suspender?: Pick<CallerKeySuspender, "suspend"> | undefined;
}

/**
 * Where a raised signal goes: a metric, an audit row and a signed webhook, and a suspension if the
 * operator chose one for this signal. Nothing here is awaited by the call that tripped the signal.
 */
export function createAlertSink(deps: AlertSinkDeps): (trip: SignalTrip) => void {
  return (trip) => {
    const id = `alert_${randomUUID()}`;
    const suspend = deps.suspender !== undefined && deps.suspendOn?.has(trip.signal) === true;
    deps.metrics.misuseSignal(trip.signal);
    deps.logger.warn(
      {
        signal: trip.signal,
        callerKeyId: trip.callerKeyId,
        observed: trip.observed,
        baseline: trip.baseline,
      },
      "misuse signal raised",
    );
    deps.audit
      .record({
        requestId: id,
        callerKeyId: trip.callerKeyId,
        userRef: trip.userRef ?? null,
        action: "misuse.signal",
        target: trip.callerKeyId,
        outcome: "ok",
        detail: { reason: trip.signal, count: trip.observed, baseline: Math.round(trip.baseline) },
      })
      .catch((err: unknown) =>
        deps.logger.error({ err, signal: trip.signal }, "audit: could not record a misuse signal"),
      );
    if (suspend) deps.suspender?.suspend(trip.callerKeyId, trip.signal, id);
    deps.webhook?.send(Buffer.from(JSON.stringify(alertBody(id, trip, suspend))));
  };
}
