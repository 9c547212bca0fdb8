import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import type { UserIdentity } from "../../../src/auth/identity.js";
import { revocationCutoffSec, startRevocationPruning } from "../../../src/auth/session-revocation-pruning.js";
import { createSessionRevocations, type SessionRevocations } from "../../../src/auth/session-revocations.js";
import { createTokenVerifier } from "../../../src/auth/token-verifier.js";
import { deriveUserRef } from "../../../src/keys/user-ref.js";
import { createLogger } from "../../../src/log/logger.js";
import { loadRevocations, recordLogout } from "../../../src/store/session-revocations.repository.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";
import { startTestIssuer, type TestIssuer } from "../../support/test-issuer.js";

const silent = createLogger({ level: "silent" });
const OLD = Buffer.alloc(32, 0x01);
const RECENT = Buffer.alloc(32, 0x02);
const SESSION = Buffer.alloc(32, 0x03);
const MAX_AGE_SEC = 600;
const TOLERANCE_SEC = 5;
const NOW_MS = 1_900_000_000_000;
const NOW_SEC = NOW_MS / 1000;

const identity = (userRef: Buffer, issuedAt: number): UserIdentity => ({
  userRef,
  expiresAt: NOW_SEC + 3_600,
  issuedAt,
});

function refusal(view: SessionRevocations, who: UserIdentity): string | undefined {
  try {
    view.check(who);
    return undefined;
  } catch (err) {
    return (err as { reason?: string }).reason;
  }
}

it("keeps every revocation when no maximum token age bounds how long a pre-logout token lives", () => {
  expect(revocationCutoffSec(NOW_MS, undefined, TOLERANCE_SEC)).toBeUndefined();
  expect(revocationCutoffSec(NOW_MS, MAX_AGE_SEC, TOLERANCE_SEC)).toBeLessThan(
    NOW_SEC - MAX_AGE_SEC - TOLERANCE_SEC,
  );
});

describeOnEachDatabase("session revocation pruning (%s)", (kind) => {
  let database: TestDatabase;
  let issuer: TestIssuer;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    issuer = await startTestIssuer();
  });
  afterEach(async () => {
    await database.truncate();
  });
  afterAll(async () => {
    await issuer?.close();
    await database?.close();
  });

  async function seed(): Promise<SessionRevocations> {
    const view = createSessionRevocations({ maxStalenessMs: 60_000, now: () => NOW_MS });
    view.confirmAlwaysCurrent();
    const revocations = [
      // Past the cutoff: every token it refuses is too old anyway.
      { kind: "user" as const, ref: OLD, revokedBefore: NOW_SEC - MAX_AGE_SEC - TOLERANCE_SEC - 120 },
      { kind: "session" as const, ref: SESSION, revokedBefore: NOW_SEC - MAX_AGE_SEC - TOLERANCE_SEC - 120 },
      // Within the age window: a token issued just before it would still pass the age check.
      { kind: "user" as const, ref: RECENT, revokedBefore: NOW_SEC - MAX_AGE_SEC },
    ];
    await recordLogout(database.db, { revocations });
    for (const revocation of revocations) view.apply(revocation);
    return view;
  }

  it("deletes and forgets only the revocations past the maximum token age, and keeps the recent one in force", async () => {
    const view = await seed();
    const pruning = startRevocationPruning({
      database,
      revocations: view,
      maxTokenAgeSec: MAX_AGE_SEC,
      clockToleranceSec: TOLERANCE_SEC,
      intervalMs: 3_600_000,
      logger: silent,
      now: () => NOW_MS,
    });
    try {
      expect(await pruning.runOnce()).toEqual({ deleted: 2, forgotten: 2 });
      const left = await loadRevocations(database.db);
      expect(left.map((r) => r.ref.toString("hex"))).toEqual([RECENT.toString("hex")]);
      expect(view.size).toBe(1);
      expect(refusal(view, identity(RECENT, NOW_SEC - MAX_AGE_SEC - 1))).toBe("session_ended");
      // A second pass (or another replica's) finds nothing more to do.
      expect(await pruning.runOnce()).toEqual({ deleted: 0, forgotten: 0 });
    } finally {
      pruning.close();
    }
  });

  it("prunes nothing without a maximum token age, however old the revocation", async () => {
    const view = await seed();
    const pruning = startRevocationPruning({
      database,
      revocations: view,
      maxTokenAgeSec: undefined,
      clockToleranceSec: TOLERANCE_SEC,
      intervalMs: 3_600_000,
      logger: silent,
      now: () => NOW_MS,
    });
    expect(await pruning.runOnce()).toEqual({ deleted: 0, forgotten: 0 });
    pruning.close();
    expect((await loadRevocations(database.db)).length).toBe(3);
    expect(refusal(view, identity(OLD, NOW_SEC - 10_000))).toBe("session_ended");
  });

  it("a token issued before a pruned revocation is still refused, by its age", async () => {
    const pruned = NOW_SEC - MAX_AGE_SEC - TOLERANCE_SEC - 120;
    expect(pruned).toBeLessThan(revocationCutoffSec(NOW_MS, MAX_AGE_SEC, TOLERANCE_SEC) ?? 0);
    const verifier = createTokenVerifier({
      issuer: issuer.issuer,
      audience: issuer.audience,
      jwksUrl: issuer.jwksUrl,
      requiredPermission: issuer.permission,
      clockToleranceSec: TOLERANCE_SEC,
      maxTokenAgeSec: MAX_AGE_SEC,
      jwksCacheMaxAgeMs: 60_000,
      jwksCooldownMs: 1_000,
      jwksTimeoutMs: 2_000,
      cacheMaxEntries: 10,
      deriveUserRef: (iss, sub) => deriveUserRef(Buffer.alloc(32, 9), iss, sub),
      now: () => NOW_MS,
    });
    const preLogout = await issuer.sign({ iat: pruned, exp: NOW_SEC + 3_600 });
    const err = await brokerErrorOf(verifier.verify(preLogout));
    expect([err.code, err.reason]).toEqual(["unauthenticated", "token_expired"]);
    // The same token minted inside the window passes: the refusal above is the age, not the key.
    const fresh = await issuer.sign({ iat: NOW_SEC - 10, exp: NOW_SEC + 3_600 });
    await expect(verifier.verify(fresh)).resolves.toMatchObject({ issuedAt: NOW_SEC - 10 });
  });
});
