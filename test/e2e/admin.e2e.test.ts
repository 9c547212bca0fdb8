import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { status } from "@grpc/grpc-js";
import { sql } from "kysely";
import { afterAll, beforeAll, expect, it } from "vitest";
import { AdminService } from "../../src/gen/keybroker/v1/admin_pb.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { asServiceError, createGrpcClients, unary, type WireMessage } from "../support/grpc-client.js";
import { describeOnEachDatabase } from "../support/test-database.js";

const USER = "auth0|admin-e2e-canary-user";
const BUF = fileURLToPath(new URL("../../node_modules/.bin/buf", import.meta.url));
const run = promisify(execFile);

/** The services a port's reflection lists, as `buf curl` sees them (no .proto at hand). */
async function reflectedServices(address: string): Promise<string[]> {
  const { stdout } = await run(
    BUF,
    ["curl", "--protocol", "grpc", "--http2-prior-knowledge", "--list-services", `http://${address}`],
    { timeout: 20_000 },
  );
  return stdout.trim().split("\n");
}

const ADMIN_REQUESTS: Record<string, WireMessage> = {
  CreateCallerKey: { name: "x", scopes: ["secrets:read"] },
  ListCallerKeys: {},
  RevokeCallerKey: { id: "ck_0000000000000000" },
  RotateCallerKey: { id: "ck_0000000000000000", overlapSeconds: 60 },
  ShredUser: { userRef: "0".repeat(64) },
  QueryAudit: {},
  VerifyAudit: {},
};

describeOnEachDatabase("AdminService end to end on %s", (kind) => {
  let broker: BrokerHarness;
  let adminKey: string;
  let appKey: string;
  let token: string;

  beforeAll(async () => {
    broker = await startBroker(kind);
    adminKey = (await broker.callerKey(["admin"])).key;
    appKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    token = await broker.tokenFor(USER);
  });

  afterAll(async () => {
    await broker.close();
    expect(findLeaks(broker.logs.text(), [adminKey, appKey, token, USER])).toEqual([]);
  });

  const admin = (method: string, request: WireMessage, callerKey = adminKey) =>
    unary(broker.clients.admin, method, request, { callerKey }).then((r) => r.response);
  const codeOf = (promise: Promise<unknown>) =>
    promise.then(
      () => status.OK,
      (e: unknown) => asServiceError(e).code,
    );

  it("covers every AdminService method in the scope checks below", () => {
    expect(Object.keys(ADMIN_REQUESTS).sort()).toEqual(AdminService.methods.map((m) => m.name).sort());
  });

  it.each(Object.entries(ADMIN_REQUESTS))(
    "%s is UNAUTHENTICATED without a caller key and PERMISSION_DENIED for the app's key",
    async (method, request) => {
      expect(await codeOf(unary(broker.clients.admin, method, request, {}))).toBe(status.UNAUTHENTICATED);
      expect(await codeOf(admin(method, request, appKey))).toBe(status.PERMISSION_DENIED);
    },
  );

  it("G68 L6: answers UNIMPLEMENTED for every AdminService method on the app's gRPC port", async () => {
    const onAppPort = createGrpcClients(broker.grpcAddress);
    try {
      for (const [method, request] of Object.entries(ADMIN_REQUESTS)) {
        const call = unary(onAppPort.admin, method, request, { callerKey: adminKey });
        expect(await codeOf(call), method).toBe(status.UNIMPLEMENTED);
      }
    } finally {
      onAppPort.close();
    }
  });

  it("G68 L6: does not route AdminService on the Connect port (404, Connect's unimplemented)", async () => {
    const response = await fetch(`${broker.connectUrl}/keybroker.v1.AdminService/ListCallerKeys`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-keybroker-key": adminKey },
      body: "{}",
    });
    expect(response.status).toBe(404);
    const control = await fetch(`${broker.connectUrl}/keybroker.v1.SecretService/ListSecrets`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    expect(control.status).not.toBe(404); // the route exists: refused for want of credentials
  });

  it("G68 L6: leaves AdminService out of the app port's reflection and lists it on the admin port", async () => {
    const app = await reflectedServices(broker.grpcAddress);
    expect(app).toEqual(expect.arrayContaining(["keybroker.v1.SecretService", "keybroker.v1.ProxyService"]));
    expect(app).not.toContain("keybroker.v1.AdminService");
    const admin = await reflectedServices(broker.adminAddress);
    expect(admin).toContain("keybroker.v1.AdminService");
    expect(admin).not.toContain("keybroker.v1.SecretService");
  });

  it("G68 L6: serves AdminService on its own port to an admin key", async () => {
    expect(await codeOf(admin("ListCallerKeys", {}))).toBe(status.OK);
  });

  it("G68 L6: refuses to mint an admin key over the API, by creation or by rotation (PERMISSION_DENIED)", async () => {
    const before = ((await admin("ListCallerKeys", {})).callerKeys as WireMessage[]).length;
    expect(await codeOf(admin("CreateCallerKey", { name: "escalate", scopes: ["admin"] }))).toBe(
      status.PERMISSION_DENIED,
    );
    const own = await broker.callerKey(["admin"]);
    expect(await codeOf(admin("RotateCallerKey", { id: own.id, overlapSeconds: 60 }))).toBe(
      status.PERMISSION_DENIED,
    );
    const after = ((await admin("ListCallerKeys", {})).callerKeys as WireMessage[]).length;
    // The one key the CLI path (broker.callerKey, straight to the database) created, no other.
    expect(after).toBe(before + 1);
  });

  it("B19 creates a caller key shown once, lists it by its last four characters only, and revokes it at once", async () => {
    const created = await admin("CreateCallerKey", {
      name: "reporting",
      scopes: ["secrets:read"],
      expiresInDays: 30,
    });
    const key = created.key as string;
    const id = (created.callerKey as WireMessage).id as string;
    expect(key).toMatch(/^kbk_/);
    const listed = await admin("ListCallerKeys", {});
    expect(JSON.stringify(listed)).not.toContain(key);
    expect((listed.callerKeys as WireMessage[]).find((k) => k.id === id)?.last4).toBe(key.slice(-4));
    expect(
      await codeOf(unary(broker.clients.secrets, "ListSecrets", {}, { callerKey: key, bearerToken: token })),
    ).toBe(status.OK);
    await admin("RevokeCallerKey", { id });
    expect(
      await codeOf(unary(broker.clients.secrets, "ListSecrets", {}, { callerKey: key, bearerToken: token })),
    ).toBe(status.UNAUTHENTICATED);
  });

  it("rotates a caller key: both keys work during the overlap, the old one stops after it", async () => {
    const created = await admin("CreateCallerKey", { name: "rotating", scopes: ["secrets:read"] });
    const oldKey = created.key as string;
    const rotated = await admin("RotateCallerKey", {
      id: (created.callerKey as WireMessage).id,
      overlapSeconds: 1,
    });
    const newKey = rotated.key as string;
    const list = (k: string) =>
      codeOf(unary(broker.clients.secrets, "ListSecrets", {}, { callerKey: k, bearerToken: token }));
    expect(await list(oldKey)).toBe(status.OK);
    expect(await list(newKey)).toBe(status.OK);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    expect(await list(oldKey)).toBe(status.UNAUTHENTICATED);
    expect(await list(newKey)).toBe(status.OK);
  });

  it("D44 crypto-shreds a user by subject: their secrets are gone and cannot be used", async () => {
    const put = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label: "to shred", fields: { token: broker.upstreamCredentials.bearer } },
      { callerKey: appKey, bearerToken: token },
    );
    const id = (put.response.secret as WireMessage).id as string;
    const shred = await admin("ShredUser", { subject: USER });
    expect(shred.secretsDestroyed).toBe(1);
    const use = unary(
      broker.clients.proxy,
      "Call",
      { secretId: id, method: "GET", path: "/ok" },
      { callerKey: appKey, bearerToken: token },
    );
    expect(await codeOf(use)).toBe(status.NOT_FOUND);
    expect(await codeOf(admin("ShredUser", { subject: USER }))).toBe(status.NOT_FOUND);
  });

  it("queries the audit trail by action and never returns the raw subject", async () => {
    const result = await admin("QueryAudit", { action: "user.shred" });
    const events = result.events as WireMessage[];
    expect(events.map((e) => e.outcome)).toEqual(["started", "ok", "started", "error"]);
    expect(events[0]?.userRef).toMatch(/^[0-9a-f]{64}$/);
    expect(JSON.stringify(result)).not.toContain(USER);
  });

  it("verifies the audit chain and names the first edited row", async () => {
    expect(await admin("VerifyAudit", {})).toMatchObject({ ok: true });
    const { rows } = await sql<{
      seq: number;
    }>`select seq from audit_events order by seq limit 1 offset 2`.execute(broker.database.db);
    const seq = rows[0]?.seq ?? 0;
    // The table refuses UPDATE (append-only trigger): a tamperer with owner rights disables it first.
    await sql`alter table audit_events disable trigger user`.execute(broker.database.db);
    await sql`update audit_events set action = 'secret.list' where seq = ${seq}`.execute(broker.database.db);
    await sql`alter table audit_events enable trigger user`.execute(broker.database.db);
    const verdict = await admin("VerifyAudit", {});
    expect(verdict).toMatchObject({ ok: false, firstBadSeq: String(seq) });
  });
});
