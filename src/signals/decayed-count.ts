/**
 * An exponentially-decayed event count: each event adds `amount`, and the sum decays with time
 * constant `tauMs`. Its value is "about how many events in the last `tauMs`", and value / tau is
 * a rate. O(1) per update, two numbers of memory, no buckets to rotate.
 */
export interface DecayedCount {
  value: number;
  at: number;
}

export function decayedCount(at: number): DecayedCount {
  return { value: 0, at };
}

/** The count as of `at` (never moves the state backwards: a late event decays nothing). */
export function readCount(c: DecayedCount, at: number, tauMs: number): number {
  return at <= c.at ? c.value : c.value * Math.exp((c.at - at) / tauMs);
}

/** Decays `c` to `at`, then adds `amount`; returns the new value. */
export function addCount(c: DecayedCount, at: number, tauMs: number, amount = 1): number {
  if (at > c.at) {
    c.value *= Math.exp((c.at - at) / tauMs);
    c.at = at;
  }
  c.value += amount;
  return c.value;
}

/**
 * A trailing baseline rate (per ms) from a slow decayed count. Early on the count has not filled
 * its window, so it is divided by the window it has filled, tau × (1 − e^(−age/tau)), exact for a
 * steady rate; and the age is taken as at least `minWindowMs`, so a burst in the first seconds of
 * a subject's life still looks like a burst rather than like its own baseline.
 */
export function baselineRate(
  c: DecayedCount,
  at: number,
  tauMs: number,
  firstSeen: number,
  minWindowMs: number,
): number {
  const age = Math.max(minWindowMs, at - firstSeen);
  return readCount(c, at, tauMs) / (tauMs * -Math.expm1(-age / tauMs));
}
