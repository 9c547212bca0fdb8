import { status } from "@grpc/grpc-js";
import { sql } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { verifyAuditChain } from "../../src/audit/audit-chain.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { asServiceError, unary, type WireMessage } from "../support/grpc-client.js";
import { describeOnEachDatabase, dumpAllRows } from "../support/test-database.js";

const USER = "google-oauth2|audit-e2e-canary-sub";

describeOnEachDatabase("the audit trail end to end on %s", (kind) => {
  let broker: BrokerHarness;
  let key: { key: string; id: string };
  let token: string;

  beforeAll(async () => {
    broker = await startBroker(kind);
    key = await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"]);
    token = await broker.tokenFor(USER);
  });

  afterAll(async () => {
    await broker.close();
  });

  const auth = () => ({ callerKey: key.key, bearerToken: token });
  // Outcome rows of sensitive calls are committed after the call answers: settle them first.
  const rows = async () => {
    await broker.app.flushAudit();
    return broker.database.db
      .selectFrom("audit_events")
      .select(["seq", "action", "outcome", "code", "target", "caller_key_id", "request_id"])
      .orderBy("seq")
      .execute();
  };

  it("E47 writes started and final rows for every put, use and delete, and a row for list and auth failures", async () => {
    const put = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "audited", fields: { token: broker.upstreamCredentials.bearer } },
      auth(),
    );
    const id = (put.response.secret as WireMessage).id as string;
    await unary(broker.clients.secrets, "ListSecrets", {}, auth());
    await unary(broker.clients.proxy, "Call", { secretId: id, method: "GET", path: "/ok" }, auth());
    await unary(broker.clients.secrets, "DeleteSecret", { secretId: id }, auth());
    await unary(broker.clients.secrets, "ListSecrets", {}, { callerKey: key.key }).catch(() => undefined);

    const trail = (await rows()).map((r) => `${r.action}:${r.outcome}`);
    expect(trail).toEqual([
      "secret.put:started",
      "secret.put:ok",
      "secret.list:ok",
      "proxy.call:started",
      "proxy.call:ok",
      "secret.delete:started",
      "secret.delete:ok",
      "auth.failure:error",
    ]);
    const all = await rows();
    expect(all.filter((r) => r.action !== "auth.failure").every((r) => r.caller_key_id === key.id)).toBe(
      true,
    );
    expect(all.find((r) => r.action === "proxy.call" && r.outcome === "ok")?.target).toBe(id);
    expect(await verifyAuditChain(broker.database.db)).toMatchObject({ ok: true, rows: all.length });
  });

  it("I7 keeps secrets, tokens, caller keys and the raw sub out of every audit row", async () => {
    const dump = await dumpAllRows(broker.database.db);
    expect(findLeaks(dump, [broker.upstreamCredentials.bearer, token, key.key, USER])).toEqual([]);
  });

  it("E48 fails a proxied call with UNAVAILABLE when the audit trail cannot be written, and sends nothing upstream", async () => {
    const put = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "outage", fields: { token: broker.upstreamCredentials.bearer } },
      auth(),
    );
    const id = (put.response.secret as WireMessage).id as string;
    broker.upstream.reset();
    await sql`alter table audit_events rename to audit_events_offline`.execute(broker.database.db);
    try {
      const err = await unary(
        broker.clients.proxy,
        "Call",
        { secretId: id, method: "GET", path: "/ok" },
        auth(),
      ).then(
        () => undefined,
        (e: unknown) => asServiceError(e),
      );
      expect(err?.code).toBe(status.UNAVAILABLE);
      expect(broker.upstream.requests).toHaveLength(0);
      const del = await unary(broker.clients.secrets, "DeleteSecret", { secretId: id }, auth()).then(
        () => undefined,
        (e: unknown) => asServiceError(e),
      );
      expect(del?.code).toBe(status.UNAVAILABLE);
    } finally {
      await sql`alter table audit_events_offline rename to audit_events`.execute(broker.database.db);
    }
    // Nothing was lost: the secret survived the refused delete, and service resumes.
    const again = await unary(
      broker.clients.proxy,
      "Call",
      { secretId: id, method: "GET", path: "/ok" },
      auth(),
    );
    expect(again.response.status).toBe(200);
    expect(await verifyAuditChain(broker.database.db)).toMatchObject({ ok: true });
  });
});
