import { sql } from "kysely";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { verifyAuditChain } from "../../src/audit/audit-chain.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { codeName, secretIdOf, type UserSession, userSession } from "./fault-fixture.js";

// E48, F57: the audit trail's INSERT fails (a trigger raises, as a full disk, a revoked grant or
// a broken replica would). Sensitive calls must then not happen at all: nothing decrypted,
// nothing sent upstream, nothing stored; reads return nothing unaudited; liveness stays up.
// The data-key cache serves each key once, so "nothing decrypted" is visible at the KMS.

describe("E48 F57 audit insert failures", () => {
  let broker: BrokerHarness;
  let user: UserSession;
  let secretId: string;

  beforeAll(async () => {
    broker = await startBroker("pglite", { KEYBROKER_DATA_KEY_CACHE_MAX_USES: "1" });
    const callerKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    const token = await broker.tokenFor("google-oauth2|faults-audit");
    user = userSession(broker.clients, { callerKey, token, secretValue: broker.upstreamCredentials.bearer });
    const put = await user.put("audited");
    expect(codeName(put.code)).toBe("OK");
    secretId = secretIdOf(put);
    await sql`
      create function keybroker_fault_audit_insert() returns trigger language plpgsql as $$
      begin raise exception 'injected audit insert failure'; end $$`.execute(broker.database.db);
  });

  afterEach(async () => {
    await restoreAudit();
  });

  afterAll(async () => {
    await broker?.close();
  });

  async function breakAudit(): Promise<void> {
    await sql`create trigger keybroker_fault_audit before insert on audit_events
              for each statement execute function keybroker_fault_audit_insert()`.execute(broker.database.db);
    // Count KMS and upstream traffic from the moment the trail breaks.
    broker.kms.resetCounts();
    broker.upstream.reset();
  }

  async function restoreAudit(): Promise<void> {
    await sql`drop trigger if exists keybroker_fault_audit on audit_events`.execute(broker.database.db);
  }

  it("E48 refuses Proxy.Call with UNAVAILABLE, decrypts nothing and sends nothing upstream", async () => {
    expect(codeName((await user.list()).code)).toBe("OK"); // uses up the cached key
    await breakAudit();

    const call = await user.call(secretId, "POST", "/ok", { deadlineMs: 5000 });

    expect(codeName(call.code)).toBe("UNAVAILABLE");
    expect(broker.upstream.requests).toHaveLength(0);
    expect(broker.kms.callCount()).toBe(0);
    expect(findLeaks(`${call.details}\n${broker.logs.text()}`, [broker.upstreamCredentials.bearer])).toEqual(
      [],
    );
  });

  it("E48 refuses PutSecret and ListSecrets with UNAVAILABLE and stores nothing", async () => {
    await breakAudit();

    const put = await user.put("unaudited", { deadlineMs: 5000 });
    const kmsCallsByPut = broker.kms.callCount();
    // A list is not "sensitive" (no started row): it may unwrap the key for the masked hints,
    // but returns nothing unless its audit row commits.
    const list = await user.list({ deadlineMs: 5000 });

    expect(codeName(put.code)).toBe("UNAVAILABLE");
    expect(kmsCallsByPut).toBe(0);
    expect(codeName(list.code)).toBe("UNAVAILABLE");
    expect(list.response).toBeUndefined();
    const stored = await broker.database.db
      .selectFrom("secrets")
      .select("id")
      .where("label", "=", "unaudited")
      .execute();
    expect(stored).toEqual([]);
  });

  it("E48 keeps liveness up during the outage and serves again, with an intact chain, once the trail is writable", async () => {
    await breakAudit();
    const during = await user.call(secretId, "GET", "/ok", { deadlineMs: 5000 });
    const livez = await fetch(`${broker.opsUrl}/livez`);

    await restoreAudit();
    const after = await user.call(secretId, "GET", "/ok", { deadlineMs: 5000 });

    expect(codeName(during.code)).toBe("UNAVAILABLE");
    expect(livez.status).toBe(200);
    expect(codeName(after.code)).toBe("OK");
    expect(after.response?.status).toBe(200);
    expect(broker.upstream.requests).toHaveLength(1);
    expect(await verifyAuditChain(broker.database.db)).toMatchObject({ ok: true });
  });
});
