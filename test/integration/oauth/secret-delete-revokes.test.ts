import { randomBytes } from "node:crypto";
import { Agent, fetch } from "undici";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { UserIdentity } from "../../../src/auth/identity.js";
import { expectBrokerError } from "../../support/broker-errors.js";
import {
  createOAuthConnectionFixture,
  type OAuthConnectionFixture,
} from "../../support/oauth-connection-fixture.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

// Issue 15 item 5: DeleteSecret of an OAuth connection revokes the grant at the provider's RFC
// 7009 endpoint (best effort, audited), then deletes — against a real authorization server.

describeOnEachDatabase("DeleteSecret revokes OAuth connections on %s", (kind) => {
  let database: TestDatabase;
  let fx: OAuthConnectionFixture;
  let agent: Agent;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    fx = await createOAuthConnectionFixture(database);
    agent = new Agent({ connect: { ca: fx.party.ca } });
  });

  afterAll(async () => {
    await agent?.close();
    await fx?.close();
    await database?.close();
  });

  const userOf = (name: string): { user: UserIdentity; subject: string } => {
    const subject = `${name}-${randomBytes(4).toString("hex")}`;
    return {
      subject,
      user: { userRef: fx.secrets.userRefOf(subject), expiresAt: Math.floor(Date.now() / 1000) + 3600 },
    };
  };

  const resourceStatus = async (accessToken: string) => {
    const res = await fetch(fx.party.resourceUrl, {
      dispatcher: agent,
      headers: { authorization: `Bearer ${accessToken}` },
    });
    await res.body?.cancel();
    return res.status;
  };

  const refreshAtProvider = async (refreshToken: string) => {
    const res = await fetch(fx.party.tokenEndpoint, {
      method: "POST",
      dispatcher: agent,
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({
        grant_type: "refresh_token",
        refresh_token: refreshToken,
        client_id: fx.client.clientId,
        client_secret: fx.client.clientSecret,
      }),
    });
    return ((await res.json()) as { error?: string }).error;
  };

  it("J190 deleting a connection revokes its refresh token at the provider, so neither token works there any more, then deletes it", async () => {
    const { user, subject } = userOf("delete");
    const connected = await fx.connect(user, subject);
    expect(await resourceStatus(connected.accessToken)).toBe(200);
    const before = fx.party.revocations.length;

    await fx.broker.deleter.delete(user, connected.secretId, fx.actorFor(user));

    expect(fx.party.revocations.slice(before)).toEqual([
      { tokenTypeHint: "refresh_token", kind: "RefreshToken", status: 200 },
    ]);
    expect(await resourceStatus(connected.accessToken)).toBe(401);
    expect(await refreshAtProvider(connected.refreshToken ?? "")).toBe("invalid_grant");
    await expectBrokerError(fx.broker.secrets.fetch(user, connected.secretId), "not_found");
    const rows = await fx.auditRows("secret.revoke", connected.secretId);
    expect(rows.map((r) => r.outcome)).toEqual(["started", "ok"]);
    expect(rows[1]?.detail).toMatchObject({ provider: "tp", reason: "revoked" });
  });

  it("J191 a revocation that fails (provider down) is audited as an error and the connection is deleted anyway", async () => {
    const { user, subject } = userOf("delete-down");
    const connected = await fx.connect(user, subject);
    fx.party.setDown(true);
    try {
      await fx.broker.deleter.delete(user, connected.secretId, fx.actorFor(user));
    } finally {
      fx.party.setDown(false);
    }
    await expectBrokerError(fx.broker.secrets.fetch(user, connected.secretId), "not_found");
    const rows = await fx.auditRows("secret.revoke", connected.secretId);
    expect(rows.map((r) => [r.outcome, r.code])).toEqual([
      ["started", null],
      ["error", "unavailable"],
    ]);
    expect(fx.logs.text()).toContain("could not revoke a deleted connection");
  });

  it("J192 a connection whose provider has no revocation endpoint is deleted without any request to the provider", async () => {
    const { user, subject } = userOf("no-endpoint");
    const connected = await fx.connect(user, subject, "tp-norevoke");
    const before = fx.party.revocations.length;
    await fx.broker.deleter.delete(user, connected.secretId, fx.actorFor(user));
    await expectBrokerError(fx.broker.secrets.fetch(user, connected.secretId), "not_found");
    expect(fx.party.revocations.length).toBe(before);
    expect(await fx.auditRows("secret.revoke", connected.secretId)).toEqual([]);
  });

  it("J193 another user's connection id answers NOT_FOUND, revokes nothing and deletes nothing", async () => {
    const owner = userOf("owner");
    const thief = userOf("thief");
    const connected = await fx.connect(owner.user, owner.subject);
    const before = fx.party.revocations.length;
    await expectBrokerError(
      fx.broker.deleter.delete(thief.user, connected.secretId, fx.actorFor(thief.user)),
      "not_found",
    );
    expect(fx.party.revocations.length).toBe(before);
    expect((await fx.broker.secrets.fetch(owner.user, connected.secretId)).secret.id).toBe(
      connected.secretId,
    );
    expect(await resourceStatus(connected.accessToken)).toBe(200);
  });
});
