import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createPinSessions, pinSessionOf } from "../../../src/keys/pin-sessions.js";

describe("unlocked PIN sessions (issue 14 item 4)", () => {
  const userRef = randomBytes(32);
  const envelope = randomBytes(64);
  const key = randomBytes(32);

  it("I149 an unlock serves only its own session, until token expiry, idle timeout or a changed envelope", () => {
    let now = 1_000_000;
    const sessions = createPinSessions({ idleMs: 60_000, maxEntries: 10, now: () => now });
    const a = pinSessionOf({ userRef, expiresAt: 2_000, issuedAt: 900, sessionRef: randomBytes(32) });
    const b = pinSessionOf({ userRef, expiresAt: 2_000, issuedAt: 900, sessionRef: randomBytes(32) });
    const noSid = pinSessionOf({ userRef, expiresAt: 2_000, issuedAt: 901 });
    sessions.unlock(a, envelope, key);

    expect(sessions.take(a, envelope)).toEqual(key);
    expect(sessions.take(b, envelope)).toBeUndefined();
    expect(sessions.take(noSid, envelope)).toBeUndefined();
    expect(sessions.take(a, randomBytes(64))).toBeUndefined(); // PIN changed elsewhere: dropped
    expect(sessions.take(a, envelope)).toBeUndefined();

    sessions.unlock(a, envelope, key);
    now += 60_000;
    expect(sessions.take(a, envelope)).toBeUndefined(); // idle

    now = 1_000_000;
    sessions.unlock(a, envelope, key);
    now = 2_000_000;
    expect(sessions.take(a, envelope)).toBeUndefined(); // the token has expired
  });

  it("I150 forgetting a user (logout, shred) zeroes every unlocked session of theirs", () => {
    const sessions = createPinSessions({ idleMs: 60_000, maxEntries: 10 });
    const a = pinSessionOf({ userRef, expiresAt: 4_000_000_000, sessionRef: randomBytes(32) });
    sessions.unlock(a, envelope, key);
    expect(sessions.forgetUser(userRef)).toBe(1);
    expect(sessions.take(a, envelope)).toBeUndefined();
  });
});
