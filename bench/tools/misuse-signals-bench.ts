/**
 * CPU per event of feeding the misuse detectors (issue 13 item 7): `npx tsx bench/tools/misuse-signals-bench.ts`.
 * Organic traffic from the simulation's generator (test/support/misuse-load.ts) is generated first,
 * then fed through the monitor with every default detector, so only the feeding is measured.
 * Also measures the call path's part: building one observation from a finished call (misuse-feed).
 */
import { watchUse } from "../../src/api/rpc/misuse-feed.js";
import { createMisuseMonitor } from "../../src/signals/misuse-monitor.js";
import { createOrganicLoad, seededRandom, simUsers } from "../../test/support/misuse-load.js";

const EVENTS = Number(process.env.N ?? 300_000);
const RATE = 440;
const random = seededRandom(1);
const load = createOrganicLoad({
  random,
  users: simUsers(20_000),
  ratePerSec: RATE,
  perUserRatePerSec: 0.1,
  meanSessionMs: 600_000,
  tokenRefreshMs: 600_000,
  notFoundShare: 0.002,
});
const calls = [...load.calls(0, (EVENTS / RATE) * 1000)];

function cpuMicros(run: () => void): number {
  const c0 = process.cpuUsage();
  run();
  const c = process.cpuUsage(c0);
  return c.user + c.system;
}

let clock = 0;
let raised = 0;
for (const round of [1, 2, 3]) {
  const monitor = createMisuseMonitor({ now: () => clock, raise: () => raised++ });
  const micros = cpuMicros(() => {
    for (const call of calls) {
      clock = call.at;
      monitor.observe(call.facts);
    }
  });
  console.log(
    `round ${round}: monitor.observe ${(micros / calls.length).toFixed(2)} µs CPU/event (${calls.length} events, ${raised} alerts)`,
  );
  raised = 0;
}

// The call path's share: one watchUse per call, settled by an already-resolved promise (the clock
// stands still here, so the alerts this part may raise mean nothing).
const monitor = createMisuseMonitor({ now: () => clock, raise: () => raised++ });
const caller = { keyId: "ck_bench", name: "bench", scopes: new Set<never>() };
const sample = calls.slice(0, 100_000);
const micros = cpuMicros(() => {
  for (const call of sample) {
    const use = watchUse(monitor, {
      caller,
      user: { userRef: call.facts.userRef as Buffer, expiresAt: 0, issuedAt: call.facts.tokenIssuedAt },
      secretId: call.facts.secretId,
    });
    void use.planned(Promise.resolve({ operationClass: "read" as const }));
    void use.settled(Promise.resolve(undefined));
  }
});
await new Promise((resolve) => setImmediate(resolve));
console.log(
  `watchUse (call-path part, excl. the observe it schedules) ${(micros / sample.length).toFixed(2)} µs CPU/call`,
);
