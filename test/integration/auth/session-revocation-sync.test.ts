import { sql } from "kysely";
import { afterAll, afterEach, beforeAll, expect, it } from "vitest";
import type { UserIdentity } from "../../../src/auth/identity.js";
import { startRevocationSync } from "../../../src/auth/session-revocation-sync.js";
import { createSessionRevocations, type SessionRevocations } from "../../../src/auth/session-revocations.js";
import { createLogger } from "../../../src/log/logger.js";
import { recordLogout } from "../../../src/store/session-revocations.repository.js";
import { brokerErrorThrownBy } from "../../support/broker-errors.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

const silent = createLogger({ level: "silent" });
const ALICE = Buffer.alloc(32, 0xa1);
const BOB = Buffer.alloc(32, 0xb0);
const POLL_MS = 10;
const MAX_POLLS = 500;

const token = (userRef: Buffer, issuedAt: number): UserIdentity => ({
  userRef,
  expiresAt: 2_000_000_000,
  issuedAt,
});

/** Polls (bounded) until `check` stops throwing the way `expected` says. */
async function eventually(condition: () => boolean): Promise<void> {
  for (let i = 0; i < MAX_POLLS; i++) {
    if (condition()) return;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  throw new Error("condition never held");
}

const refused = (view: SessionRevocations, identity: UserIdentity) => {
  try {
    view.check(identity);
    return undefined;
  } catch (err) {
    return (err as { reason?: string; code?: string }).reason ?? (err as { code: string }).code;
  }
};

describeOnEachDatabase("session revocation sync (%s)", (kind) => {
  let database: TestDatabase;
  const closers: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    database = await createTestDatabase(kind);
  });
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    await database.truncate();
  });
  afterAll(async () => {
    await database?.close();
  });

  async function replica(maxStalenessMs = 60_000): Promise<SessionRevocations> {
    const view = createSessionRevocations({ maxStalenessMs });
    const sync = await startRevocationSync({
      database,
      revocations: view,
      heartbeatMs: 100,
      reconnectDelayMs: 100,
      logger: silent,
    });
    closers.push(() => sync.close());
    return view;
  }

  it("I131 a logout committed by one replica reaches another through NOTIFY, and one started later loads it", async () => {
    const a = await replica();
    const b = await replica();
    const recorded = await recordLogout(database.db, {
      revocations: [{ kind: "user", ref: ALICE, revokedBefore: 1_000 }],
    });
    expect(recorded.outcome).toBe("recorded");
    await eventually(() => refused(a, token(ALICE, 999)) === "session_ended");
    await eventually(() => refused(b, token(ALICE, 999)) === "session_ended");
    expect(refused(b, token(BOB, 999))).toBeUndefined();

    const late = await replica();
    expect(refused(late, token(ALICE, 1_000))).toBe("session_ended");
    expect(refused(late, token(ALICE, 1_001))).toBeUndefined();
  });

  it("I130 a logout token id is accepted once: the replay changes nothing, and a revocation is never lowered", async () => {
    const tokenId = { hash: Buffer.alloc(32, 7), expiresAt: new Date(Date.now() + 60_000) };
    const first = await recordLogout(database.db, {
      tokenId,
      revocations: [{ kind: "user", ref: ALICE, revokedBefore: 2_000 }],
    });
    expect(first.outcome).toBe("recorded");
    const replay = await recordLogout(database.db, {
      tokenId,
      revocations: [{ kind: "user", ref: BOB, revokedBefore: 3_000 }],
    });
    expect(replay).toEqual({ outcome: "replayed" });
    const lower = await recordLogout(database.db, {
      revocations: [{ kind: "user", ref: ALICE, revokedBefore: 1_500 }],
    });
    expect(lower).toMatchObject({ outcome: "recorded", revocations: [{ revokedBefore: 2_000 }] });
    const view = await replica();
    expect(refused(view, token(BOB, 1))).toBeUndefined();
    expect(refused(view, token(ALICE, 1_999))).toBe("session_ended");
  });

  if (kind === "postgres") {
    it("I132 a lost LISTEN connection fails calls closed once the view is stale, and reconnecting reloads what was missed", async () => {
      const view = await replica(1_000);
      expect(refused(view, token(ALICE, 1))).toBeUndefined();
      // Kill the listening backend (and only it): the revocation below commits while this
      // replica cannot hear of it, so only the reload on reconnect can bring it.
      const killed = await sql<{ killed: boolean }>`
        select pg_terminate_backend(pid) as killed from pg_stat_activity
        where datname = current_database() and application_name like 'keybroker listen %'`.execute(
        database.db,
      );
      expect(killed.rows).toEqual([{ killed: true }]);
      await recordLogout(database.db, { revocations: [{ kind: "user", ref: ALICE, revokedBefore: 5 }] });
      // Meanwhile the token is never served as if nothing happened past the bound: it is refused
      // UNAVAILABLE (stale) or, once reloaded, "session ended".
      await eventually(() => refused(view, token(ALICE, 1)) === "session_ended");
      expect(refused(view, token(BOB, 1))).toBeUndefined();
    });
  } else {
    it("I132 an in-process (PGlite) view, whose notices cannot be lost, is current as soon as it is loaded", async () => {
      const view = await replica(1_000);
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      expect(refused(view, token(ALICE, 1))).toBeUndefined();
    });
  }

  it("I132 a view that stops being confirmed refuses calls UNAVAILABLE", async () => {
    const view = createSessionRevocations({ maxStalenessMs: 1_000, now: () => 10_000 });
    view.confirmCurrent(8_000);
    expect(brokerErrorThrownBy(() => view.check(token(BOB, 1))).code).toBe("unavailable");
  });
});
