import { BoundedMap } from "./bounded-map.js";
import { addCount, baselineRate, type DecayedCount, decayedCount } from "./decayed-count.js";
import type { Detector, SignalTrip } from "./signal-event.js";

export interface UserRateOptions {
  /** The burst window: the fast count is "calls in about this long". */
  readonly fastTauMs: number;
  /** The trailing baseline's time constant. */
  readonly slowTauMs: number;
  /** A baseline is never taken over less than this, so a new user's first burst still stands out. */
  readonly minBaselineWindowMs: number;
  /** Fewer calls than this in the burst window never trip, whatever the baseline. */
  readonly minBurst: number;
  /** Trips when the burst rate is at least this many times the user's own baseline rate. */
  readonly ratio: number;
  /** Users tracked at once; the least recently seen is forgotten first. */
  readonly maxUsers: number;
}

export const USER_RATE_DEFAULTS: UserRateOptions = {
  fastTauMs: 10_000,
  slowTauMs: 3_600_000,
  minBaselineWindowMs: 300_000,
  minBurst: 10,
  ratio: 10,
  maxUsers: 50_000,
};

interface UserState {
  readonly firstSeen: number;
  readonly fast: DecayedCount;
  readonly slow: DecayedCount;
  tripped: boolean;
}

/**
 * A user's call rate far above their own trailing baseline. The main app acts for every user, so
 * the fleet's rate says little; one user suddenly calling many times faster than they ever do
 * (a replayed token driven by a script) does. Re-arms once the burst has died down to half.
 */
export function createUserRateDetector(options: Partial<UserRateOptions> = {}): Detector {
  const o = { ...USER_RATE_DEFAULTS, ...options };
  const users = new BoundedMap<number, UserState>(o.maxUsers);
  return {
    observe(event, at) {
      const user = users.touch(userKey(event.userRef), () => ({
        firstSeen: at,
        fast: decayedCount(at),
        slow: decayedCount(at),
        tripped: false,
      }));
      const burst = addCount(user.fast, at, o.fastTauMs);
      addCount(user.slow, at, o.slowTauMs);
      if (user.tripped) {
        if (burst < o.minBurst / 2) user.tripped = false;
        return undefined;
      }
      if (burst < o.minBurst) return undefined;
      const baselinePerWindow =
        baselineRate(user.slow, at, o.slowTauMs, user.firstSeen, o.minBaselineWindowMs) * o.fastTauMs;
      if (burst < o.ratio * baselinePerWindow) return undefined;
      user.tripped = true;
      const trip: SignalTrip = {
        signal: "user_rate",
        at,
        callerKeyId: event.callerKeyId,
        callerKeyName: event.callerKeyName,
        userRef: event.userRef,
        observed: Math.round(burst),
        baseline: Math.round(baselinePerWindow * 100) / 100,
      };
      return trip;
    },
  };
}

/**
 * The first 48 bits of the ref as a number: a Map keyed by numbers is several times cheaper than
 * one keyed by a string made from 32 bytes. The ref is an HMAC output, so two of 50,000 users
 * share a key with probability about 1e-5, and then only their counts merge.
 */
function userKey(userRef: Uint8Array): number {
  let key = 0;
  for (let i = 0; i < 6; i++) key = key * 256 + (userRef[i] ?? 0);
  return key;
}
