import { describe, expect, it } from "vitest";
import { createMisuseMonitor } from "../../../src/signals/misuse-monitor.js";
import { MISUSE_SIGNALS, type MisuseSignalName, type SignalTrip } from "../../../src/signals/signal-event.js";
import {
  createOrganicLoad,
  mergeByTime,
  replayAttack,
  type SimCall,
  seededRandom,
  simUsers,
} from "../../support/misuse-load.js";

// Simulated time: the monitor reads this clock, so twelve minutes of traffic run in seconds.
const EPOCH = Date.UTC(2026, 0, 5, 9, 0, 0);
const MINUTE = 60_000;
const WARM_UP_MS = 12 * MINUTE;
const ATTACK_START = EPOCH + WARM_UP_MS;
const ATTACK_MS = 10_000;
const RUN_END = ATTACK_START + 30_000;

const VICTIMS = 200;
const BURST_CALLS = 10;
// 200 victims x (10 reads + 1 withdrawal attempt) in 10 s = 220 calls/s on top of the organic 20/s.
const ATTACK_RATE = (VICTIMS * (BURST_CALLS + 1)) / (ATTACK_MS / 1000);
const BACKGROUND_RATE = 20;
const TOTAL_RATE = BACKGROUND_RATE + ATTACK_RATE;

const organicShape = {
  perUserRatePerSec: 0.1,
  meanSessionMs: 10 * MINUTE,
  tokenRefreshMs: 10 * MINUTE,
  notFoundShare: 0.002,
};

function run(calls: Iterable<SimCall>): SignalTrip[] {
  let clock = EPOCH;
  const raised: SignalTrip[] = [];
  const monitor = createMisuseMonitor({ now: () => clock, raise: (trip) => raised.push(trip) });
  for (const call of calls) {
    clock = call.at;
    monitor.observe(call.facts);
  }
  return raised;
}

function attackScenario(seed: number) {
  const random = seededRandom(seed);
  const users = simUsers(20_000);
  const organic = createOrganicLoad({ random, users, ratePerSec: BACKGROUND_RATE, ...organicShape });
  const before = [...organic.calls(EPOCH, ATTACK_START)];
  // Replayed tokens: the oldest ones the attacker kept while on the host (organic tokens are
  // refreshed every ten minutes, so these are older than any organic one in use).
  const victims = [...organic.captured]
    .sort(([, a], [, b]) => a - b)
    .slice(0, VICTIMS)
    .map(([user, tokenIssuedAtMs]) => ({ user, tokenIssuedAtMs }));
  const attack = replayAttack({
    victims,
    start: ATTACK_START,
    durationMs: ATTACK_MS,
    burstCalls: BURST_CALLS,
  });
  return { victims, calls: [...before, ...mergeByTime(organic.calls(ATTACK_START, RUN_END), attack)] };
}

function organicScenario(seed: number) {
  const random = seededRandom(seed);
  const organic = createOrganicLoad({
    random,
    users: simUsers(20_000),
    ratePerSec: TOTAL_RATE,
    ...organicShape,
  });
  return organic.calls(EPOCH, RUN_END);
}

const firstRaised = (raised: readonly SignalTrip[], signal: MisuseSignalName) =>
  raised.find((t) => t.signal === signal);

describe("misuse signals under a simulated token-replay attack and organic load", () => {
  it("H113 raises every signal within 10 s of a caller replaying 200 users' tokens", () => {
    const { victims, calls } = attackScenario(13);
    expect(victims).toHaveLength(VICTIMS);

    const raised = run(calls);

    expect(raised.filter((t) => t.at < ATTACK_START)).toEqual([]);
    for (const signal of MISUSE_SIGNALS) {
      const trip = firstRaised(raised, signal);
      expect(trip, `${signal} raised`).toBeDefined();
      expect((trip?.at ?? Number.POSITIVE_INFINITY) - ATTACK_START, `${signal} delay`).toBeLessThanOrEqual(
        10_000,
      );
    }
  });

  it("H114 raises none for organic load at the same total rate, over the same simulated time", () => {
    const raised = run(organicScenario(13));

    expect(raised).toEqual([]);
  });

  it("H114 raises none for organic load under other seeds either", () => {
    for (const seed of [1, 2]) {
      expect(run(organicScenario(seed)), `seed ${seed}`).toEqual([]);
    }
  });

  it("folds repeated trips of one signal for one caller key into one alert per cooldown", () => {
    const { calls } = attackScenario(7);

    const raised = run(calls);

    const perSignal = new Map<string, number>();
    for (const trip of raised) perSignal.set(trip.signal, (perSignal.get(trip.signal) ?? 0) + 1);
    expect([...perSignal.values()].every((n) => n === 1)).toBe(true);
  });
});
