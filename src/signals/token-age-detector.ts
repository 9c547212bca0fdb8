import { BoundedMap } from "./bounded-map.js";
import { addCount, type DecayedCount, decayedCount, readCount } from "./decayed-count.js";
import type { Detector } from "./signal-event.js";

export interface TokenAgeOptions {
  readonly fastTauMs: number;
  readonly slowTauMs: number;
  /** Uses in the fast window needed before its mean is trusted. */
  readonly minFastSamples: number;
  /** Uses seen before the baseline mean is trusted. */
  readonly minSlowSamples: number;
  /** Trips when the recent mean age is at least this many times the baseline mean... */
  readonly ratio: number;
  /** ...and at least this many seconds above it. */
  readonly minShiftSec: number;
  readonly maxCallers: number;
}

export const TOKEN_AGE_DEFAULTS: TokenAgeOptions = {
  fastTauMs: 10_000,
  slowTauMs: 1_800_000,
  minFastSamples: 20,
  minSlowSamples: 200,
  ratio: 2,
  minShiftSec: 300,
  maxCallers: 10_000,
};

interface CallerState {
  readonly fastAge: DecayedCount;
  readonly fastUses: DecayedCount;
  readonly slowAge: DecayedCount;
  readonly slowUses: DecayedCount;
  tripped: boolean;
}

/**
 * A shift toward old tokens, per caller key. Organic tokens are used soon after they are minted
 * (the app refreshes them); tokens replayed from a log, a cache or a breach are older. The mean
 * age of recent uses is compared with the caller's own long-run mean.
 */
export function createTokenAgeDetector(options: Partial<TokenAgeOptions> = {}): Detector {
  const o = { ...TOKEN_AGE_DEFAULTS, ...options };
  const callers = new BoundedMap<string, CallerState>(o.maxCallers);
  return {
    observe(event, at) {
      if (event.tokenIssuedAt === undefined) return undefined;
      const ageSec = Math.max(0, at / 1000 - event.tokenIssuedAt);
      const caller = callers.touch(event.callerKeyId, () => ({
        fastAge: decayedCount(at),
        fastUses: decayedCount(at),
        slowAge: decayedCount(at),
        slowUses: decayedCount(at),
        tripped: false,
      }));
      const fastUses = addCount(caller.fastUses, at, o.fastTauMs);
      const fastMean = addCount(caller.fastAge, at, o.fastTauMs, ageSec) / fastUses;
      const slowUses = addCount(caller.slowUses, at, o.slowTauMs);
      const slowMean = addCount(caller.slowAge, at, o.slowTauMs, ageSec) / slowUses;
      if (caller.tripped) {
        if (fastMean < slowMean * (1 + (o.ratio - 1) / 2)) caller.tripped = false;
        return undefined;
      }
      if (
        fastUses < o.minFastSamples ||
        readCount(caller.slowUses, at, o.slowTauMs) < o.minSlowSamples ||
        fastMean < o.ratio * slowMean ||
        fastMean - slowMean < o.minShiftSec
      ) {
        return undefined;
      }
      caller.tripped = true;
      return {
        signal: "token_age",
        at,
        callerKeyId: event.callerKeyId,
        callerKeyName: event.callerKeyName,
        observed: Math.round(fastMean),
        baseline: Math.round(slowMean),
      };
    },
  };
}
