import { BoundedMap } from "./bounded-map.js";
import type { Detector } from "./signal-event.js";

export interface DangerousUseOptions {
  /** (secret, class) pairs remembered; forgetting one only means a second alert for it later. */
  readonly maxPairs: number;
}

export const DANGEROUS_USE_DEFAULTS: DangerousUseOptions = { maxPairs: 100_000 };

/**
 * The first use of a dangerous class (transfer, credentials, webhooks) with a secret, attempted or
 * done: a refused withdrawal counts, because trying is the signal. Remembered per replica since it
 * started, so a restart can repeat an alert but never miss a first use.
 */
export function createDangerousUseDetector(options: Partial<DangerousUseOptions> = {}): Detector {
  const o = { ...DANGEROUS_USE_DEFAULTS, ...options };
  const seen = new BoundedMap<string, true>(o.maxPairs);
  return {
    observe(event, at) {
      if (!event.dangerous) return undefined;
      const operationClass = event.operationClass ?? "dangerous";
      const key = `${event.secretId}\u0000${operationClass}`;
      if (seen.has(key)) {
        seen.touch(key, () => true);
        return undefined;
      }
      seen.touch(key, () => true);
      return {
        signal: "dangerous_first_use",
        at,
        callerKeyId: event.callerKeyId,
        callerKeyName: event.callerKeyName,
        operationClass,
        observed: 1,
        baseline: 0,
      };
    },
  };
}
