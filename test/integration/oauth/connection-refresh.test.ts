import { randomBytes } from "node:crypto";
import { Agent, fetch } from "undici";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { UserIdentity } from "../../../src/auth/identity.js";
import type { SealedSecret } from "../../../src/secrets/secret-service.js";
import { findConnection } from "../../../src/store/oauth-connections.repository.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { createCanaryRegistry, describeLeaks } from "../../support/leak-sweep.js";
import {
  type BrokerReplica,
  createOAuthConnectionFixture,
  type OAuthConnectionFixture,
} from "../../support/oauth-connection-fixture.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  dumpAllRows,
  type TestDatabase,
} from "../../support/test-database.js";

// Issue 15 item 4, refresh on use, against a real authorization server (oidc-provider: rotating
// refresh tokens with reuse detection, so a double refresh would revoke the grant and show).
// The brokers' clock is moved forward to make a token due; the provider's clock is real, so a
// token the broker refreshes early is still live there, as it would be in production.

const MARGIN_S = 10;
const TTL_S = 60;

describeOnEachDatabase("OAuth connection refresh on %s", (kind) => {
  let database: TestDatabase;
  let fx: OAuthConnectionFixture;
  let agent: Agent;

  beforeAll(async () => {
    database = await createTestDatabase(kind);
    fx = await createOAuthConnectionFixture(database, {
      accessTokenTtlSeconds: TTL_S,
      marginSeconds: MARGIN_S,
    });
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

  const scopeFor = (user: UserIdentity, signal = AbortSignal.timeout(20_000)) => ({
    signal,
    actor: fx.actorFor(user),
  });

  /** Uses the connection as the proxy would: fresh() then unseal, and calls the provider's API. */
  async function use(broker: BrokerReplica, user: UserIdentity, secretId: string) {
    const sealed = await broker.secrets.fetch(user, secretId);
    const fresh = await broker.refresher.fresh(user, sealed, scopeFor(user));
    return { fresh, status: await resourceStatus(broker, user, fresh) };
  }

  async function tokensOf(broker: BrokerReplica, user: UserIdentity, sealed: SealedSecret) {
    const opened = await broker.secrets.unseal(user, sealed, AbortSignal.timeout(5_000));
    const out = {
      accessToken: opened.fields.get("access_token")?.toString("latin1") ?? "",
      refreshToken: opened.fields.get("refresh_token")?.toString("latin1"),
    };
    for (const v of opened.fields.values()) v.fill(0);
    return out;
  }

  async function resourceStatus(broker: BrokerReplica, user: UserIdentity, sealed: SealedSecret) {
    const { accessToken } = await tokensOf(broker, user, sealed);
    const res = await fetch(fx.party.resourceUrl, {
      dispatcher: agent,
      headers: { authorization: `Bearer ${accessToken}` },
    });
    await res.body?.cancel();
    return res.status;
  }

  const refreshGrants = () => fx.party.grants.filter((g) => g.grantType === "refresh_token");

  it("J180 uses a connection whose token is not yet due as it is, without asking the provider", async () => {
    const { user, subject } = userOf("fresh");
    const { secretId } = await fx.connect(user, subject);
    const before = fx.party.grants.length;
    const sealed = await fx.broker.secrets.fetch(user, secretId);
    const fresh = await fx.broker.refresher.fresh(user, sealed, scopeFor(user));
    expect(fresh).toBe(sealed);
    expect(fx.party.grants.length).toBe(before);
    expect(await resourceStatus(fx.broker, user, fresh)).toBe(200);
  });

  it("J181 refreshes a token within the margin before use: the new access token works, the rotated refresh token replaces the old, audited as secret.refresh", async () => {
    const { user, subject } = userOf("due");
    const connected = await fx.connect(user, subject);
    fx.advance((TTL_S - MARGIN_S + 1) * 1000);
    const before = refreshGrants().length;
    const { fresh, status } = await use(fx.broker, user, connected.secretId);
    expect(status).toBe(200);
    expect(refreshGrants().slice(before)).toEqual([
      { grantType: "refresh_token", error: undefined, clientId: fx.client.clientId },
    ]);
    expect(fresh.secret.version).toBe(2);
    expect(fresh.secret.connection).toMatchObject({
      status: "active",
      scopes: ["files:read", "profile:read"],
    });
    const stored = await tokensOf(fx.broker, user, fresh);
    expect(stored.accessToken).not.toBe(connected.accessToken);
    expect(stored.refreshToken).not.toBe(connected.refreshToken);
    // The provider rotated it: the old refresh token is spent there; the stored one is the live one.
    expect(fx.party.issuedValues.has(stored.refreshToken ?? "")).toBe(true);
    // The refreshed token is good for the provider's full lifetime again: not due any more.
    const again = await use(fx.broker, user, connected.secretId);
    expect(again.fresh.secret.version).toBe(2);
    expect(refreshGrants().length).toBe(before + 1);

    const rows = await fx.auditRows("secret.refresh", connected.secretId);
    expect(rows.map((r) => r.outcome)).toEqual(["started", "ok"]);
    expect(rows[1]?.detail).toMatchObject({ provider: "tp", secretVersion: 2 });
    expect(rows[1]?.callerKeyId).toBe("ck_test");
  });

  it("J182 two replicas and many calls racing to refresh one connection make exactly one refresh at the provider, and all use its tokens", async () => {
    const { user, subject } = userOf("race");
    const { secretId } = await fx.connect(user, subject);
    const other = fx.replica();
    fx.advance((TTL_S - MARGIN_S + 1) * 1000);
    // The provider answers slowly, so the losers really do wait on the winner's lease.
    fx.party.setTokenDelay(300);
    const before = refreshGrants().length;
    try {
      const calls = [fx.broker, other, fx.broker, other, fx.broker, other].map((b) => use(b, user, secretId));
      const results = await Promise.all(calls);
      expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200]);
      expect(new Set(results.map((r) => r.fresh.secret.version))).toEqual(new Set([2]));
    } finally {
      fx.party.setTokenDelay(0);
    }
    // Exactly one: a second refresh with the rotated-out token would have been reuse (invalid_grant).
    expect(refreshGrants().slice(before)).toEqual([
      { grantType: "refresh_token", error: undefined, clientId: fx.client.clientId },
    ]);
    const head = await findConnection(database.db, user.userRef, secretId);
    expect(head).toMatchObject({ version: 2, refreshLeaseUntil: null, connection: { status: "active" } });
  });

  it("J183 invalid_grant (the user revoked the app at the provider) answers FAILED_PRECONDITION to reconnect, marks the connection, and later calls never reach the provider", async () => {
    const { user, subject } = userOf("revoked");
    const { secretId } = await fx.connect(user, subject);
    await fx.party.revokeGrants(subject);
    fx.advance((TTL_S - MARGIN_S + 1) * 1000);
    const before = fx.party.grants.length;
    const err = await brokerErrorOf(use(fx.broker, user, secretId));
    expect(err.code).toBe("failed_precondition");
    expect(err.reason).toBe("connection_needs_reconsent");
    expect(err.message).toMatch(/must reconnect/);
    expect(fx.party.grants.slice(before)).toEqual([
      { grantType: "refresh_token", error: "invalid_grant", clientId: fx.client.clientId },
    ]);
    const head = await findConnection(database.db, user.userRef, secretId);
    expect(head?.connection.status).toBe("needs_reconsent");

    // Later calls, on any replica: refused from the row alone.
    const later = await brokerErrorOf(use(fx.replica(), user, secretId));
    expect(later.reason).toBe("connection_needs_reconsent");
    expect(fx.party.grants.length).toBe(before + 1);
    const rows = await fx.auditRows("secret.refresh", secretId);
    expect(rows.map((r) => [r.outcome, r.code])).toEqual([
      ["started", null],
      ["error", "failed_precondition"],
    ]);
  });

  it("J184 a provider outage while the token has expired answers UNAVAILABLE and keeps the stored tokens; once it is back the next call refreshes", async () => {
    const { user, subject } = userOf("outage");
    const connected = await fx.connect(user, subject);
    fx.advance((TTL_S + 5) * 1000);
    fx.party.setDown(true);
    try {
      const err = await brokerErrorOf(use(fx.broker, user, connected.secretId));
      expect(err.code).toBe("unavailable");
      expect(err.reason).toBeUndefined();
    } finally {
      fx.party.setDown(false);
    }
    const kept = await fx.broker.secrets.fetch(user, connected.secretId);
    expect(kept.secret.version).toBe(1);
    expect((await tokensOf(fx.broker, user, kept)).refreshToken).toBe(connected.refreshToken);
    const head = await findConnection(database.db, user.userRef, connected.secretId);
    expect(head).toMatchObject({ refreshLeaseUntil: null, connection: { status: "active" } });

    const { fresh, status } = await use(fx.broker, user, connected.secretId);
    expect(status).toBe(200);
    expect(fresh.secret.version).toBe(2);
  });

  it("J185 a provider outage while the token is only within the margin lets the call go ahead with the current token", async () => {
    const { user, subject } = userOf("margin-outage");
    const connected = await fx.connect(user, subject);
    fx.advance((TTL_S - MARGIN_S + 1) * 1000);
    fx.party.setDown(true);
    try {
      const { fresh, status } = await use(fx.broker, user, connected.secretId);
      expect(status).toBe(200);
      expect(fresh.secret.version).toBe(1);
    } finally {
      fx.party.setDown(false);
    }
  });

  it("J186 a Facebook long-lived token near expiry is exchanged for a new one on use; an expired one needs re-consent without asking Facebook", async () => {
    const { user, subject } = userOf("facebook");
    const near = await fx.connectFacebook(user, subject, TTL_S);
    fx.advance((TTL_S - MARGIN_S + 1) * 1000);
    const before = fx.party.grants.length;
    const { fresh, status } = await use(fx.broker, user, near.secretId);
    expect(status).toBe(200);
    expect(fresh.secret.version).toBe(2);
    expect(fx.party.grants.slice(before)).toEqual([
      { grantType: "fb_exchange_token", error: undefined, clientId: fx.client.clientId },
    ]);
    expect((await tokensOf(fx.broker, user, fresh)).accessToken).not.toBe(near.accessToken);

    const expired = await fx.connectFacebook(user, `${subject}-2`, TTL_S);
    fx.advance((TTL_S + 5) * 1000);
    const count = fx.party.grants.length;
    const err = await brokerErrorOf(use(fx.broker, user, expired.secretId));
    expect(err.reason).toBe("connection_needs_reconsent");
    expect(fx.party.grants.length).toBe(count);
    expect((await findConnection(database.db, user.userRef, expired.secretId))?.connection.status).toBe(
      "needs_reconsent",
    );
  });

  it("J187 a refresh keeps the connection's label and grant (not reset to the provider's default)", async () => {
    const { user, subject } = userOf("grant");
    const { secretId } = await fx.connect(user, subject, "tp", { grant: ["read"] });
    const v1 = await fx.broker.secrets.fetch(user, secretId);
    expect(v1.secret.grant).toEqual(["read"]);
    fx.advance((TTL_S - MARGIN_S + 1) * 1000);
    const { fresh } = await use(fx.broker, user, secretId);
    expect(fresh.secret.version).toBe(2);
    expect(fresh.secret.label).toBe(v1.secret.label);
    expect(fresh.secret.grant).toEqual(v1.secret.grant);
  });

  it("J188 a call cancelled while its refresh is in flight does not lose the refreshed tokens", async () => {
    const { user, subject } = userOf("cancel");
    const { secretId } = await fx.connect(user, subject);
    fx.advance((TTL_S - MARGIN_S + 1) * 1000);
    fx.party.setTokenDelay(300);
    const before = refreshGrants().length;
    try {
      const sealed = await fx.broker.secrets.fetch(user, secretId);
      const cancelled = brokerErrorOf(
        fx.broker.refresher.fresh(user, sealed, scopeFor(user, AbortSignal.timeout(50))),
      );
      expect((await cancelled).code).toBe("unavailable");
      // The refresh goes on and is stored: poll the row (bounded) for the new version.
      let version = 1;
      for (let i = 0; i < 100 && version === 1; i++) {
        await new Promise((r) => setTimeout(r, 50));
        version = (await findConnection(database.db, user.userRef, secretId))?.version ?? 0;
      }
      expect(version).toBe(2);
    } finally {
      fx.party.setTokenDelay(0);
    }
    const { status } = await use(fx.broker, user, secretId);
    expect(status).toBe(200);
    expect(refreshGrants().length).toBe(before + 1);
  });

  it("J194 no access token, refresh token, code or client secret the provider issued appears in the logs, the audit trail or a database dump", async () => {
    // Its own connect, refresh and delete, so the sweep also holds when this test runs alone;
    // run after the others, it covers every value they made the provider issue too.
    const { user, subject } = userOf("sweep");
    const { secretId } = await fx.connect(user, subject);
    fx.advance((TTL_S - MARGIN_S + 1) * 1000);
    expect((await use(fx.broker, user, secretId)).fresh.secret.version).toBe(2);
    await fx.broker.deleter.delete(user, secretId, fx.actorFor(user));
    const canaries = createCanaryRegistry();
    for (const value of fx.party.issuedValues) canaries.register("provider-issued", value);
    canaries.register("client-secret", fx.client.clientSecret);
    // A code, two access tokens, two refresh tokens and the client secret at least.
    expect(fx.party.issuedValues.size).toBeGreaterThanOrEqual(6);
    await fx.audit.flush();
    const hits = [
      ...canaries.scan("logs", fx.logs.text()),
      ...canaries.scan("database", await dumpAllRows(database.db)),
    ];
    expect(hits, describeLeaks(hits)).toEqual([]);
  });
});
