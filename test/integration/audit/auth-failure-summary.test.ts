import { afterAll, afterEach, beforeAll, beforeEach, expect, it, vi } from "vitest";
import { createCallerKeyAdmin } from "../../../src/admin/caller-key-admin.js";
import {
  type CallCredentials,
  createUserCallGuard,
  type UserCallGuard,
} from "../../../src/api/rpc/call-guard.js";
import { verifyAuditChain } from "../../../src/audit/audit-chain.js";
import { type AuditLog, createAuditLog } from "../../../src/audit/audit-log.js";
import {
  type AuthFailureSummary,
  createAuthFailureSummary,
} from "../../../src/audit/auth-failure-summary.js";
import { createCallerAuthenticator } from "../../../src/auth/caller-authenticator.js";
import { BrokerError } from "../../../src/errors.js";
import { createLogger } from "../../../src/log/logger.js";
import { createMetrics, type Metrics } from "../../../src/observability/metrics.js";
import { createCallerKeyLookup } from "../../../src/store/caller-keys.repository.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

/**
 * Review M4 over the real guard, caller authenticator, audit log and database: a refusal without a
 * valid caller key is counted and summarised, one after a valid caller key keeps its own row.
 */
describeOnEachDatabase("auth failure summary (%s)", (kind) => {
  let database: TestDatabase;
  let audit: AuditLog;
  let summary: AuthFailureSummary;
  let metrics: Metrics;
  let guard: UserCallGuard;
  let validKey = "";
  let requests = 0;

  const credentials = (callerKey: string | undefined, bearerToken?: string): CallCredentials => ({
    requestId: `req-${++requests}`,
    callerKey,
    bearerToken,
    signal: new AbortController().signal,
    clientCertSha256: undefined,
  });

  const authFailureRows = async () => {
    await audit.flush();
    return database.db
      .selectFrom("audit_events")
      .select(["caller_key_id", "request_id", "detail"])
      .where("action", "=", "auth.failure")
      .where("seq", ">", firstSeq)
      .orderBy("seq")
      .execute();
  };

  const refusals = async (reason: string): Promise<number> => {
    const metric = await metrics.registry.getSingleMetric("keybroker_auth_refusals_total")?.get();
    return metric?.values.find((v) => v.labels.reason === reason)?.value ?? 0;
  };

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    validKey = (
      await createCallerKeyAdmin({ db: database.db }).create({
        name: "m4",
        scopes: ["proxy:call"],
        expiresAt: null,
      })
    ).key;
  });

  afterAll(async () => {
    await database?.close();
  });

  function build(intervalMs: number): void {
    const logger = createLogger({ level: "silent" });
    audit = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
    summary = createAuthFailureSummary({ audit, logger, intervalMs });
    metrics = createMetrics();
    guard = createUserCallGuard({
      callers: createCallerAuthenticator({ lookup: createCallerKeyLookup(database.prepared) }),
      tokens: {
        verify: async () => {
          throw new BrokerError("unauthenticated", "invalid token", { reason: "token_invalid" });
        },
      },
      audit,
      unauthenticated: summary,
      metrics,
      logger,
    });
  }

  // The trail is append-only: each test reads only the rows written after it began.
  let firstSeq = 0;
  beforeEach(async () => {
    const head = await database.db.selectFrom("audit_chain_head").select("last_seq").executeTakeFirst();
    firstSeq = Number(head?.last_seq ?? 0);
  });

  afterEach(async () => {
    await summary.close();
    await audit.close();
  });

  it("M4 writes at most two rows for 1,000 calls without a caller key, and counts all 1,000", async () => {
    build(60_000);
    for (let i = 0; i < 1_000; i++) {
      const err = await brokerErrorOf(guard.authorize(credentials(undefined), "proxy:call"));
      expect(err.reason).toBe("caller_key_missing");
    }
    expect(await authFailureRows()).toEqual([]);

    await summary.close();
    const rows = await authFailureRows();
    expect(rows.length).toBeGreaterThanOrEqual(1);
    expect(rows.length).toBeLessThanOrEqual(2);
    expect(rows.map((r) => r.detail)).toEqual([
      expect.objectContaining({ reason: "caller_key_missing", count: 1_000 }),
    ]);
    expect(await refusals("caller_key_missing")).toBe(1_000);
  });

  it("M4 summarises malformed and unknown caller keys by reason, one row each", async () => {
    build(60_000);
    const unknownKey = `${validKey.slice(0, -8)}AAAAAAAA`;
    await brokerErrorOf(guard.authorize(credentials("kbk_not-a-key"), "proxy:call"));
    await brokerErrorOf(guard.authorize(credentials(unknownKey), "proxy:call"));
    await brokerErrorOf(guard.authorize(credentials(undefined), "proxy:call"));
    await summary.flush();
    const details = (await authFailureRows()).map((r) => r.detail);
    expect(details).toHaveLength(2);
    expect(details).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ reason: "caller_key_invalid", count: 2 }),
        expect.objectContaining({ reason: "caller_key_missing", count: 1 }),
      ]),
    );
  });

  it("M4 still writes its own row for a valid caller key with a bad user token", async () => {
    build(60_000);
    const err = await brokerErrorOf(guard.authorize(credentials(validKey, "not-a-token"), "proxy:call"));
    expect(err.reason).toBe("token_invalid");
    const rows = await authFailureRows();
    expect(rows).toHaveLength(1);
    expect(rows[0]?.caller_key_id).not.toBeNull();
    expect(rows[0]?.request_id).toBe(`req-${requests}`);
    expect(rows[0]?.detail).toMatchObject({ reason: "user_token" });
    expect(await refusals("token_invalid")).toBe(1);
  });

  it("M4 still writes its own row for a valid caller key that lacks the scope", async () => {
    build(60_000);
    const err = await brokerErrorOf(guard.authorizeCaller(credentials(validKey), "admin"));
    expect(err.reason).toBe("caller_key_scope_missing");
    const rows = await authFailureRows();
    expect(rows).toHaveLength(1);
    expect(rows[0]?.request_id).toBe(`req-${requests}`);
  });

  it("M4 writes the summary row once its interval has passed, without a flush", async () => {
    build(100);
    await brokerErrorOf(guard.authorizeCaller(credentials(undefined), "admin"));
    await brokerErrorOf(guard.authorizeCaller(credentials(undefined), "admin"));
    await vi.waitFor(
      async () => {
        expect((await authFailureRows()).map((r) => r.detail)).toEqual([
          expect.objectContaining({ reason: "caller_key_missing", count: 2 }),
        ]);
      },
      { timeout: 5_000, interval: 50 },
    );
    expect(await verifyAuditChain(database.db)).toMatchObject({ ok: true });
  });
});
