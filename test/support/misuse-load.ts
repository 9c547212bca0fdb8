import { createHash } from "node:crypto";
import type { CallFacts } from "../../src/signals/misuse-monitor.js";

/**
 * Deterministic simulated traffic for the misuse detectors: organic sessions and a token-replay
 * attack, as CallFacts stamped with a simulated clock. Seeded, so a run is reproducible.
 */

/** mulberry32: a small, fast, seeded PRNG (uniform in [0, 1)). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const exponential = (random: () => number, mean: number) => -Math.log(1 - random()) * mean;

/** A simulated user: a stable HMAC-like ref and one secret. */
export interface SimUser {
  readonly userRef: Buffer;
  readonly secretId: string;
}

export function simUsers(count: number): SimUser[] {
  return Array.from({ length: count }, (_, i) => ({
    userRef: createHash("sha256").update(`sim-user-${i}`).digest(),
    secretId: `sec_sim_${i}`,
  }));
}

export const MAIN_APP = { callerKeyId: "ck_mainapp", callerKeyName: "main app" } as const;

/** One timed call. */
export interface SimCall {
  readonly at: number;
  readonly facts: CallFacts;
}

export interface OrganicOptions {
  readonly random: () => number;
  readonly users: readonly SimUser[];
  /** Calls per second, fleet-wide. */
  readonly ratePerSec: number;
  /** Each active user's calls per second during a session. */
  readonly perUserRatePerSec: number;
  readonly meanSessionMs: number;
  /** The app refreshes a session's token this often, so organic tokens are at most this old. */
  readonly tokenRefreshMs: number;
  /** Share of calls answered NOT_FOUND (a secret deleted in another tab). */
  readonly notFoundShare: number;
}

interface Session {
  user: SimUser;
  start: number;
  end: number;
}

/**
 * Organic traffic: sessions of users who log in (a fresh token), call at their own pace for a
 * while, and leave; the app refreshes tokens, so each is young when used. Only read and trade
 * classes: the default grant never includes a dangerous one.
 */
export function createOrganicLoad(options: OrganicOptions) {
  const { random, users } = options;
  const slots = Math.max(1, Math.round(options.ratePerSec / options.perUserRatePerSec));
  const sessions: (Session | undefined)[] = Array.from({ length: slots }, () => undefined);
  /** Users seen so far, with the first token each used (what an attacker on the host could keep). */
  const captured = new Map<SimUser, number>();
  let next = 0;

  function sessionAt(slot: number, at: number): Session {
    let session = sessions[slot];
    if (session === undefined || at >= session.end) {
      const user = users[Math.floor(random() * users.length)] as SimUser;
      // A new session starts somewhere in its life at time 0, so the load starts in steady state.
      const start = session === undefined ? at - random() * options.meanSessionMs : at;
      session = { user, start, end: at + exponential(random, options.meanSessionMs) };
      sessions[slot] = session;
    }
    return session;
  }

  return {
    captured,
    /** The organic calls in [from, to). */
    *calls(from: number, to: number): Generator<SimCall> {
      if (next < from) next = from;
      while (next < to) {
        const at = next;
        next += exponential(random, 1000 / options.ratePerSec);
        const session = sessionAt(Math.floor(random() * slots), at);
        const refreshes = Math.floor((at - session.start) / options.tokenRefreshMs);
        const issuedAtMs = session.start + refreshes * options.tokenRefreshMs;
        if (!captured.has(session.user)) captured.set(session.user, issuedAtMs);
        const notFound = random() < options.notFoundShare;
        yield {
          at,
          facts: {
            callerKeyId: MAIN_APP.callerKeyId,
            callerKeyName: MAIN_APP.callerKeyName,
            userRef: session.user.userRef,
            secretId: notFound ? `sec_gone_${Math.floor(random() * 1e9)}` : session.user.secretId,
            code: notFound ? "not_found" : null,
            operationClass: random() < 0.8 ? "read" : "trade",
            dangerous: false,
            tokenIssuedAt: Math.floor(issuedAtMs / 1000),
          },
        };
      }
    },
  };
}

/**
 * The attack: a caller replaying captured tokens of `victims`, each making a burst of
 * `burstCalls` reads and then one withdrawal attempt, which the grant refuses (PERMISSION_DENIED).
 * Victims follow one another back to back, spread evenly over `durationMs`.
 */
export function* replayAttack(options: {
  readonly victims: ReadonlyArray<{ user: SimUser; tokenIssuedAtMs: number }>;
  readonly start: number;
  readonly durationMs: number;
  readonly burstCalls: number;
}): Generator<SimCall> {
  const perVictim = options.durationMs / options.victims.length;
  const step = perVictim / (options.burstCalls + 1);
  for (const [i, victim] of options.victims.entries()) {
    const base = options.start + i * perVictim;
    const shared = {
      ...MAIN_APP,
      userRef: victim.user.userRef,
      secretId: victim.user.secretId,
      tokenIssuedAt: Math.floor(victim.tokenIssuedAtMs / 1000),
    };
    for (let c = 0; c < options.burstCalls; c++) {
      yield {
        at: base + c * step,
        facts: { ...shared, code: null, operationClass: "read", dangerous: false },
      };
    }
    yield {
      at: base + options.burstCalls * step,
      facts: { ...shared, code: "permission_denied", operationClass: "transfer", dangerous: true },
    };
  }
}

/** Merges time-ordered call streams into one, in time order. */
export function* mergeByTime(...streams: Iterable<SimCall>[]): Generator<SimCall> {
  const iterators = streams.map((s) => s[Symbol.iterator]());
  const heads = iterators.map((it) => it.next());
  for (;;) {
    let best = -1;
    for (let i = 0; i < heads.length; i++) {
      const head = heads[i];
      if (head === undefined || head.done === true) continue;
      const bestHead = heads[best];
      if (
        best === -1 ||
        (bestHead !== undefined && bestHead.done !== true && head.value.at < bestHead.value.at)
      ) {
        best = i;
      }
    }
    if (best === -1) return;
    const head = heads[best] as IteratorYieldResult<SimCall>;
    yield head.value;
    heads[best] = (iterators[best] as Iterator<SimCall>).next();
  }
}
