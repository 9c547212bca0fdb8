import { BoundedMap } from "./bounded-map.js";
import { addCount, baselineRate, decayedCount } from "./decayed-count.js";
import type { Detector } from "./signal-event.js";

export interface SecretSpreadOptions {
  /** A secret counts once per this long: the measure is distinct secrets used per minute. */
  readonly distinctWindowMs: number;
  readonly fastTauMs: number;
  readonly slowTauMs: number;
  /** Nothing trips until the fleet has been watched this long (a baseline must form first). */
  readonly warmUpMs: number;
  /** Fewer distinct secrets per minute than this never trip. */
  readonly minPerMinute: number;
  readonly ratio: number;
  /** Secrets remembered at once (older ones may be counted again: over-, never under-counting). */
  readonly maxSecrets: number;
}

export const SECRET_SPREAD_DEFAULTS: SecretSpreadOptions = {
  distinctWindowMs: 60_000,
  fastTauMs: 10_000,
  slowTauMs: 1_800_000,
  warmUpMs: 600_000,
  minPerMinute: 60,
  ratio: 3,
  maxSecrets: 200_000,
};

const MINUTE_MS = 60_000;

/**
 * The fleet's distinct secrets used per minute far above its baseline: exfiltration by use touches
 * many users' keys once or a few times each, where organic traffic keeps returning to the keys of
 * the users who are active. Per replica (each sees its share of the traffic, so the ratio holds).
 */
export function createSecretSpreadDetector(options: Partial<SecretSpreadOptions> = {}): Detector {
  const o = { ...SECRET_SPREAD_DEFAULTS, ...options };
  const lastCounted = new BoundedMap<string, { at: number }>(o.maxSecrets);
  let started: number | undefined;
  const fast = decayedCount(0);
  const slow = decayedCount(0);
  let tripped = false;
  return {
    observe(event, at) {
      started ??= at;
      const entry = lastCounted.touch(event.secretId, () => ({ at: Number.NEGATIVE_INFINITY }));
      if (at - entry.at < o.distinctWindowMs) return undefined;
      entry.at = at;
      const perMinute = (addCount(fast, at, o.fastTauMs) / o.fastTauMs) * MINUTE_MS;
      addCount(slow, at, o.slowTauMs);
      const baseline = baselineRate(slow, at, o.slowTauMs, started, o.warmUpMs) * MINUTE_MS;
      if (tripped) {
        if (perMinute < o.ratio * baseline * 0.5) tripped = false;
        return undefined;
      }
      if (at - started < o.warmUpMs || perMinute < o.minPerMinute || perMinute < o.ratio * baseline) {
        return undefined;
      }
      tripped = true;
      return {
        signal: "secret_spread",
        at,
        callerKeyId: event.callerKeyId,
        callerKeyName: event.callerKeyName,
        observed: Math.round(perMinute),
        baseline: Math.round(baseline),
      };
    },
  };
}
