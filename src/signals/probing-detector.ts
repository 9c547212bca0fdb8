import { BoundedMap } from "./bounded-map.js";
import { addCount, baselineRate, type DecayedCount, decayedCount } from "./decayed-count.js";
import type { CallObservation, Detector } from "./signal-event.js";

export interface ProbingOptions {
  readonly fastTauMs: number;
  readonly slowTauMs: number;
  readonly minBaselineWindowMs: number;
  /** Fewer refusals than this in the burst window never trip. */
  readonly minBurst: number;
  readonly ratio: number;
  readonly maxCallers: number;
}

export const PROBING_DEFAULTS: ProbingOptions = {
  fastTauMs: 10_000,
  slowTauMs: 1_800_000,
  minBaselineWindowMs: 300_000,
  minBurst: 20,
  ratio: 4,
  maxCallers: 10_000,
};

interface CallerState {
  readonly firstSeen: number;
  readonly fast: DecayedCount;
  readonly slow: DecayedCount;
  tripped: boolean;
}

/** The refusals a prober collects: ids it may not use, calls outside a grant or scope. */
function isProbeAnswer(event: CallObservation): boolean {
  return event.code === "permission_denied" || event.code === "not_found";
}

/**
 * Bursts of PERMISSION_DENIED / NOT_FOUND from one caller key: guessing secret ids, or trying what
 * a key's grant refuses. Organic traffic has a few (a secret deleted in another tab); the baseline
 * is the caller's own, so a busy caller's usual trickle does not trip it.
 */
export function createProbingDetector(options: Partial<ProbingOptions> = {}): Detector {
  const o = { ...PROBING_DEFAULTS, ...options };
  const callers = new BoundedMap<string, CallerState>(o.maxCallers);
  return {
    observe(event, at) {
      if (!isProbeAnswer(event)) return undefined;
      const caller = callers.touch(event.callerKeyId, () => ({
        firstSeen: at,
        fast: decayedCount(at),
        slow: decayedCount(at),
        tripped: false,
      }));
      const burst = addCount(caller.fast, at, o.fastTauMs);
      addCount(caller.slow, at, o.slowTauMs);
      const baselinePerWindow =
        baselineRate(caller.slow, at, o.slowTauMs, caller.firstSeen, o.minBaselineWindowMs) * o.fastTauMs;
      const threshold = Math.max(o.minBurst, o.ratio * baselinePerWindow);
      if (caller.tripped) {
        if (burst < threshold / 2) caller.tripped = false;
        return undefined;
      }
      if (burst < threshold) return undefined;
      caller.tripped = true;
      return {
        signal: "probing",
        at,
        callerKeyId: event.callerKeyId,
        callerKeyName: event.callerKeyName,
        observed: Math.round(burst),
        baseline: Math.round(baselinePerWindow * 100) / 100,
      };
    },
  };
}
