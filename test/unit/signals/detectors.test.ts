import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { BoundedMap } from "../../../src/signals/bounded-map.js";
import { createDangerousUseDetector } from "../../../src/signals/dangerous-use-detector.js";
import { createProbingDetector } from "../../../src/signals/probing-detector.js";
import type { CallObservation } from "../../../src/signals/signal-event.js";
import { createTokenAgeDetector } from "../../../src/signals/token-age-detector.js";
import { createUserRateDetector } from "../../../src/signals/user-rate-detector.js";

const T0 = Date.UTC(2026, 0, 5);
const ref = (i: number) => createHash("sha256").update(`u${i}`).digest();
const call = (fields: Partial<CallObservation> = {}): CallObservation => ({
  callerKeyId: "ck_app",
  callerKeyName: "app",
  userRef: ref(0),
  secretId: "sec_1",
  code: null,
  dangerous: false,
  ...fields,
});

describe("misuse detectors", () => {
  it("holds at most its cap of entries however many ids an attacker cycles through", () => {
    const map = new BoundedMap<number, object>(100);
    for (let i = 0; i < 10_000; i++) map.touch(i, () => ({}));
    expect(map.size).toBeLessThanOrEqual(100);
  });

  it("keeps an entry touched recently across evictions of idle ones", () => {
    const map = new BoundedMap<number, { n: number }>(10);
    const kept = map.touch(-1, () => ({ n: 1 }));
    for (let i = 0; i < 100; i++) {
      map.touch(i, () => ({ n: 0 }));
      map.touch(-1, () => ({ n: 0 }));
    }
    expect(map.touch(-1, () => ({ n: 0 }))).toBe(kept);
  });

  it("user_rate trips on a burst, once, and re-arms only after the burst has died down", () => {
    const detector = createUserRateDetector();
    const trips = [];
    for (let i = 0; i < 30; i++) trips.push(detector.observe(call(), T0 + i * 10));
    expect(trips.filter((t) => t !== undefined)).toHaveLength(1);
    // The 11th call: ten in 90 ms have decayed a hair below the minimum burst of ten.
    expect(trips.findIndex((t) => t !== undefined)).toBe(10);
    // A minute later the count has decayed; a new burst trips again.
    const later = [];
    for (let i = 0; i < 30; i++) later.push(detector.observe(call(), T0 + 120_000 + i * 10));
    expect(later.filter((t) => t !== undefined)).toHaveLength(1);
  });

  it("user_rate ignores a steady user who calls every few seconds", () => {
    const detector = createUserRateDetector();
    for (let i = 0; i < 2_000; i++) expect(detector.observe(call(), T0 + i * 3_000)).toBeUndefined();
  });

  it("dangerous_first_use trips once per secret and class, attempted or done", () => {
    const detector = createDangerousUseDetector();
    const attempt = call({ dangerous: true, operationClass: "transfer", code: "permission_denied" });
    expect(detector.observe(attempt, T0)).toMatchObject({
      signal: "dangerous_first_use",
      operationClass: "transfer",
    });
    expect(detector.observe(attempt, T0 + 1)).toBeUndefined();
    expect(detector.observe({ ...attempt, operationClass: "credentials" }, T0 + 2)).toBeDefined();
    expect(detector.observe(call({ operationClass: "read" }), T0 + 3)).toBeUndefined();
  });

  it("probing counts only PERMISSION_DENIED and NOT_FOUND, per caller key", () => {
    const detector = createProbingDetector();
    for (let i = 0; i < 100; i++) {
      expect(detector.observe(call({ code: "unavailable", callerKeyId: "ck_a" }), T0 + i)).toBeUndefined();
    }
    const trips = [];
    for (let i = 0; i < 21; i++) {
      trips.push(
        detector.observe(
          call({ code: i % 2 === 0 ? "not_found" : "permission_denied", callerKeyId: "ck_b" }),
          T0 + i,
        ),
      );
    }
    expect(trips.findIndex((t) => t !== undefined)).toBe(20);
  });

  it("token_age trips when recent uses carry much older tokens than the caller's baseline", () => {
    const detector = createTokenAgeDetector();
    let at = T0;
    for (let i = 0; i < 400; i++, at += 100) {
      expect(detector.observe(call({ tokenIssuedAt: Math.floor(at / 1000) - 120 }), at)).toBeUndefined();
    }
    const trips = [];
    for (let i = 0; i < 40; i++, at += 100)
      trips.push(detector.observe(call({ tokenIssuedAt: Math.floor(at / 1000) - 3_600 }), at));
    expect(trips.filter((t) => t !== undefined)).toEqual([expect.objectContaining({ signal: "token_age" })]);
  });
});
