import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, expect, it } from "vitest";
import { claimPinAttempt, clearPinAttempts } from "../../../src/store/user-pins.repository.js";
import { insertUserIfAbsent } from "../../../src/store/users.repository.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

const POLICY = { maxAttempts: 4, backoffMs: 0, lockoutMs: 600_000 };

describeOnEachDatabase("wrong-PIN attempts in the shared database (issue 14 item 4, %s)", (kind) => {
  let database: TestDatabase;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  }, 60_000);
  afterAll(async () => {
    await database?.close();
  });

  async function newUser(): Promise<Buffer> {
    const userRef = randomBytes(32);
    await insertUserIfAbsent(database.db, userRef, randomBytes(64), "local:1");
    return userRef;
  }

  it("I154 concurrent guesses never get more than the configured attempts before the lockout", async () => {
    const userRef = await newUser();
    const claims = await Promise.all(
      Array.from({ length: 12 }, () => claimPinAttempt(database.db, userRef, POLICY)),
    );
    const granted = claims.filter((c) => c.claimed);
    expect(granted.length).toBeLessThanOrEqual(POLICY.maxAttempts);
    expect(granted.length).toBeGreaterThan(0);
    const refused = claims.find((c) => !c.claimed);
    expect(refused).toBeDefined();
    expect(refused !== undefined && !refused.claimed && refused.retryAfterMs).toBeGreaterThan(0);
  });

  it("I154 the n-th wrong guess waits backoff·2^(n-1), the last one locks out, and a correct PIN clears the count", async () => {
    const userRef = await newUser();
    const policy = { maxAttempts: 3, backoffMs: 60_000, lockoutMs: 600_000 };
    const first = await claimPinAttempt(database.db, userRef, policy);
    expect(first).toEqual({ claimed: true, attempt: 1, lockedOut: false });
    const backingOff = await claimPinAttempt(database.db, userRef, policy);
    expect(backingOff.claimed).toBe(false);
    expect(!backingOff.claimed && backingOff.retryAfterMs).toBeGreaterThan(55_000);
    expect(!backingOff.claimed && backingOff.retryAfterMs).toBeLessThanOrEqual(60_000);

    await clearPinAttempts(database.db, userRef);
    expect(await claimPinAttempt(database.db, userRef, policy)).toEqual({
      claimed: true,
      attempt: 1,
      lockedOut: false,
    });
  });

  it("I154 the attempt count goes with the user when the user is crypto-shredded", async () => {
    const userRef = await newUser();
    await claimPinAttempt(database.db, userRef, POLICY);
    await database.db.deleteFrom("users").where("user_ref", "=", userRef).execute();
    const left = await database.db
      .selectFrom("user_pin_attempts")
      .selectAll()
      .where("user_ref", "=", userRef)
      .execute();
    expect(left).toEqual([]);
  });
});
