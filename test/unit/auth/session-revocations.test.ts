import { describe, expect, it } from "vitest";
import type { UserIdentity } from "../../../src/auth/identity.js";
import { createSessionRevocations } from "../../../src/auth/session-revocations.js";
import { brokerErrorThrownBy } from "../../support/broker-errors.js";

const ALICE = Buffer.alloc(32, 1);
const BOB = Buffer.alloc(32, 2);
const SESSION = Buffer.alloc(32, 3);

function identity(userRef: Buffer, issuedAt: number | undefined, sessionRef?: Buffer): UserIdentity {
  return { userRef, expiresAt: 2_000_000_000, issuedAt, sessionRef };
}

function currentView(now = () => 1_000_000) {
  const view = createSessionRevocations({ maxStalenessMs: 5_000, now });
  view.confirmCurrent(now());
  return view;
}

describe("session revocations: the replica's in-memory logout view", () => {
  it("I131 refuses (session ended) a user's tokens issued at or before the logout, not later ones or other users'", () => {
    const view = currentView();
    view.apply({ kind: "user", ref: ALICE, revokedBefore: 1_000 });
    for (const issuedAt of [999, 1_000, undefined]) {
      const err = brokerErrorThrownBy(() => view.check(identity(ALICE, issuedAt)));
      expect(err.code).toBe("unauthenticated");
      expect(err.reason).toBe("session_ended");
      expect(err.message).toBe("session ended");
    }
    expect(() => view.check(identity(ALICE, 1_001))).not.toThrow();
    expect(() => view.check(identity(BOB, 999))).not.toThrow();
  });

  it("I131 refuses tokens carrying a revoked session id, and never lowers a revocation", () => {
    const view = currentView();
    view.apply({ kind: "session", ref: SESSION, revokedBefore: 1_000 });
    expect(brokerErrorThrownBy(() => view.check(identity(BOB, 990, SESSION))).reason).toBe("session_ended");
    expect(() => view.check(identity(BOB, 990))).not.toThrow();

    const heard: number[] = [];
    view.subscribe((r) => heard.push(r.revokedBefore));
    expect(view.apply({ kind: "session", ref: SESSION, revokedBefore: 900 })).toBe(false);
    expect(view.apply({ kind: "session", ref: SESSION, revokedBefore: 1_100 })).toBe(true);
    expect(heard).toEqual([1_100]);
    expect(brokerErrorThrownBy(() => view.check(identity(BOB, 1_050, SESSION))).reason).toBe("session_ended");
  });

  it("I132 fails closed (UNAVAILABLE) once the view has gone unconfirmed longer than the bound, and recovers on confirmation", () => {
    let now = 1_000_000;
    const view = currentView(() => now);
    expect(() => view.check(identity(ALICE, 1))).not.toThrow();
    now += 5_001;
    const err = brokerErrorThrownBy(() => view.check(identity(ALICE, 1)));
    expect(err.code).toBe("unavailable");
    view.confirmCurrent(now);
    expect(() => view.check(identity(ALICE, 1))).not.toThrow();
  });

  it("I132 refuses every call before its first load, and an in-process view never goes stale once loaded", () => {
    let now = 1_000_000;
    const view = createSessionRevocations({ maxStalenessMs: 5_000, now: () => now });
    expect(brokerErrorThrownBy(() => view.check(identity(ALICE, 1))).code).toBe("unavailable");
    view.confirmAlwaysCurrent();
    now += 10_000_000;
    expect(() => view.check(identity(ALICE, 1))).not.toThrow();
  });
});
