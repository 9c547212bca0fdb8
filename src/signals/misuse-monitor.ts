import type { Logger } from "../log/logger.js";
import { BoundedMap } from "./bounded-map.js";
import { createDangerousUseDetector } from "./dangerous-use-detector.js";
import { createProbingDetector } from "./probing-detector.js";
import { createSecretSpreadDetector } from "./secret-spread-detector.js";
import type { CallObservation, Detector, SignalTrip } from "./signal-event.js";
import { createTokenAgeDetector } from "./token-age-detector.js";
import { createUserRateDetector } from "./user-rate-detector.js";

/** What the call path hands the monitor (the monitor stamps the time). */
export type CallFacts = CallObservation;

/** Feeds the detectors; raises an alert (at most one per signal and caller key per cooldown). */
export interface MisuseMonitor {
  /** O(1), synchronous, never throws: the call path calls it and moves on. */
  observe(facts: CallFacts): void;
}

export interface MisuseMonitorDeps {
  /** Where raised alerts go (audit row, metric, webhook, optional suspension). Must not block. */
  readonly raise: (trip: SignalTrip) => void;
  readonly logger?: Logger;
  /** Epoch ms; injectable so a simulation runs fast and deterministically. */
  readonly now?: () => number;
  /** Alerts for the same signal and caller key closer together than this are folded into one. */
  readonly cooldownMs?: number;
  /** The detectors; default one of each with its defaults. */
  readonly detectors?: readonly Detector[];
}

const DEFAULT_COOLDOWN_MS = 600_000;

export function defaultDetectors(): Detector[] {
  return [
    createUserRateDetector(),
    createSecretSpreadDetector(),
    createDangerousUseDetector(),
    createProbingDetector(),
    createTokenAgeDetector(),
  ];
}

export function createMisuseMonitor(deps: MisuseMonitorDeps): MisuseMonitor {
  const now = deps.now ?? Date.now;
  const cooldownMs = deps.cooldownMs ?? DEFAULT_COOLDOWN_MS;
  const detectors = deps.detectors ?? defaultDetectors();
  const lastRaised = new BoundedMap<string, { at: number }>(10_000);

  function raiseOnce(trip: SignalTrip): void {
    const entry = lastRaised.touch(`${trip.signal}\u0000${trip.callerKeyId}`, () => ({
      at: Number.NEGATIVE_INFINITY,
    }));
    if (trip.at - entry.at < cooldownMs) return;
    entry.at = trip.at;
    deps.raise(trip);
  }

  return {
    observe(facts) {
      try {
        const at = now();
        for (const detector of detectors) {
          const trip = detector.observe(facts, at);
          if (trip !== undefined) raiseOnce(trip);
        }
      } catch (err) {
        // Signals watch the call; they must never fail it.
        deps.logger?.error({ err }, "misuse monitor failed on an observation");
      }
    },
  };
}
