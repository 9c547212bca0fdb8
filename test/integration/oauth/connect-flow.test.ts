import { sql } from "kysely";
import { Agent, request } from "undici";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createUserShredder } from "../../../src/admin/user-shredder.js";
import { createOAuthCallbackServer } from "../../../src/api/transport/oauth-callback-server.js";
import { createAuditLog } from "../../../src/audit/audit-log.js";
import { createAuditedRunner } from "../../../src/audit/audited-operation.js";
import type { CallerIdentity, UserIdentity } from "../../../src/auth/identity.js";
import { type ConnectFlow, createConnectFlow } from "../../../src/oauth/connect-flow.js";
import { createOAuthAppStore, type OAuthAppStore } from "../../../src/oauth/oauth-app-store.js";
import { s256Challenge } from "../../../src/oauth/pkce.js";
import {
  createTokenEndpointClient,
  type TokenEndpointClient,
} from "../../../src/oauth/token-endpoint-client.js";
import { type ProviderRegistry, parseProviderRegistry } from "../../../src/outbound/provider-registry.js";
import { parsePutSecret } from "../../../src/secrets/secret-input.js";
import type { SecretService } from "../../../src/secrets/secret-service.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { type CapturedLogs, captureLogs, findLeaks } from "../../support/captured-logs.js";
import {
  oauthTestProvider,
  startTestAuthorizationServer,
  type TestAuthorizationServer,
} from "../../support/oauth-token-endpoint.js";
import { createSecretsFixture, type SecretsFixture } from "../../support/secrets-fixture.js";
import { createTestDatabase, dumpAllRows, type TestDatabase } from "../../support/test-database.js";

const CALLBACK = "https://broker.example.test/oauth/callback";
const RETURN_URL = "https://app.example.test/connections/done";
const signal = new AbortController().signal;
// The first page of every provider's secrets (a test user has a handful).
const EVERY_PROVIDER = { provider: undefined, pageSize: 0, pageToken: "" };

describe("OAuth connect flow (StartConnection and the callback)", () => {
  let database: TestDatabase;
  let fixture: SecretsFixture;
  let as: TestAuthorizationServer;
  let registry: ProviderRegistry;
  let apps: OAuthAppStore;
  let tokens: TokenEndpointClient;
  let secrets: SecretService;
  let logs: CapturedLogs;
  let alice: UserIdentity;
  let bob: UserIdentity;
  let clock: Date | undefined;
  const app: CallerIdentity = { keyId: "ck_app", name: "main-app", scopes: new Set(["secrets:read"]) };
  const other: CallerIdentity = { keyId: "ck_other", name: "other-app", scopes: new Set(["secrets:read"]) };

  const flow = (): ConnectFlow => {
    const audit = createAuditLog({ prepared: database.prepared });
    return createConnectFlow({
      db: database.db,
      keyring: fixture.keyring,
      registry,
      apps,
      tokens,
      secrets,
      audited: createAuditedRunner({ audit, logger: logs.logger }),
      logger: logs.logger,
      callbackUrl: CALLBACK,
      returnUrlsFor: (name) => (name === "main-app" ? [RETURN_URL] : []),
      stateTtlMs: 600_000,
      now: () => clock ?? new Date(),
    });
  };

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
    fixture = await createSecretsFixture(database);
    as = await startTestAuthorizationServer();
    logs = captureLogs();
    registry = parseProviderRegistry(
      {
        providers: [
          oauthTestProvider("test-oauth", as.port),
          oauthTestProvider("test-facebook", as.port, {
            revocationEndpoint: undefined,
            scopeSeparator: ",",
            refresh: { refreshTokens: false, rotation: false, marginSeconds: 60 },
            longLivedExchange: "facebook",
          }),
        ],
      },
      { production: false },
    );
    secrets = fixture.newReplica({
      requiredFields: (id) => registry.get(id)?.definition.requiredFields,
      defaultGrant: (id) => registry.get(id)?.definition.defaultGrant,
      isOAuth: (id) => registry.get(id)?.definition.oauth !== undefined,
    });
    apps = createOAuthAppStore({
      db: database.db,
      keyring: fixture.keyring,
      isOAuthProvider: (id) => registry.get(id)?.definition.oauth !== undefined,
    });
    tokens = createTokenEndpointClient({ logger: logs.logger, ca: as.certs.ca });
    const expiresAt = Math.floor(Date.now() / 1000) + 3600;
    alice = { userRef: fixture.userRefOf("auth0|alice-oauth"), expiresAt };
    bob = { userRef: fixture.userRefOf("auth0|bob-oauth"), expiresAt };
  });

  afterAll(async () => {
    await tokens.close();
    await as.close();
    await fixture.close();
    await database.close();
  });

  beforeEach(async () => {
    clock = undefined;
    await sql`truncate table secret_versions, secrets, users, oauth_apps, oauth_authorizations cascade`.execute(
      database.db,
    );
    await apps.set("test-oauth", as.clientId, Buffer.from(as.clientSecret));
    await apps.set("test-facebook", as.clientId, Buffer.from(as.clientSecret));
  });

  /** The browser's trip: StartConnection's URL, the user consents, the provider sends a code back. */
  async function consent(user: UserIdentity, provider = "test-oauth", scopes = ["read", "profile"]) {
    const started = await flow().start(user, app, { provider, scopes, returnUrl: RETURN_URL }, signal);
    const url = new URL(started.authorizationUrl);
    const state = url.searchParams.get("state") ?? "";
    const code = as.issueCode({
      challenge: url.searchParams.get("code_challenge") ?? "",
      redirectUri: url.searchParams.get("redirect_uri") ?? "",
      scope: scopes.join(" "),
    });
    return { url, state, code };
  }

  it("J159 StartConnection returns an authorization URL with S256 PKCE and a fresh state, storing neither", async () => {
    const { url, state } = await consent(alice);
    expect(url.origin).toBe(`https://127.0.0.1:${as.port}`);
    expect(url.searchParams.get("response_type")).toBe("code");
    expect(url.searchParams.get("client_id")).toBe(as.clientId);
    expect(url.searchParams.get("redirect_uri")).toBe(CALLBACK);
    expect(url.searchParams.get("scope")).toBe("read profile");
    expect(url.searchParams.get("code_challenge_method")).toBe("S256");
    expect(url.searchParams.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(state).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const dump = await dumpAllRows(database.db);
    expect(findLeaks(dump, [state, as.clientSecret])).toEqual([]);
    const again = await consent(alice);
    expect(again.state).not.toBe(state);
  });

  it("J160 the callback exchanges the code with the PKCE verifier and stores the tokens as the user's secret", async () => {
    const { state, code } = await consent(alice);
    const outcome = await flow().complete({ state, code, error: undefined }, signal);
    expect(outcome.kind).toBe("redirect");
    const location = new URL(outcome.kind === "redirect" ? outcome.location : "");
    expect(`${location.origin}${location.pathname}`).toBe(RETURN_URL);
    expect([...location.searchParams.keys()]).toEqual(["secret_id"]);
    const secretId = location.searchParams.get("secret_id") ?? "";

    const [listed] = (await secrets.list(alice, EVERY_PROVIDER, signal)).secrets;
    expect(listed?.id).toBe(secretId);
    expect(listed?.connection?.status).toBe("active");
    expect(listed?.connection?.scopes).toEqual(["profile", "read"]);
    expect(listed?.connection?.expiresAt?.getTime()).toBeGreaterThan(Date.now() + 3_500_000);
    const opened = await secrets.open(alice, secretId, signal);
    expect(opened.fields.get("access_token")?.toString()).toBe(as.issued.accessTokens.at(-1));
    expect(opened.fields.get("refresh_token")?.toString()).toBe(as.issued.refreshTokens.at(-1));
    const exchange = as.requests.at(-1);
    expect(exchange?.form.get("grant_type")).toBe("authorization_code");
    expect(s256Challenge(exchange?.form.get("code_verifier") ?? "")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await secrets.list(bob, EVERY_PROVIDER, signal)).secrets).toEqual([]);
  });

  it("J161 a replayed state is refused with a plain 400 and stores nothing more", async () => {
    const { state, code } = await consent(alice);
    const first = await flow().complete({ state, code, error: undefined }, signal);
    expect(first.kind).toBe("redirect");
    const exchanges = as.requests.length;
    expect(await flow().complete({ state, code, error: undefined }, signal)).toEqual({ kind: "bad_request" });
    expect(as.requests.length).toBe(exchanges);
    expect((await secrets.list(alice, EVERY_PROVIDER, signal)).secrets).toHaveLength(1);
  });

  it("J161 a crypto-shredded user's pending authorizations go with the user: the consent's state then finds nothing", async () => {
    const { state: first, code: firstCode } = await consent(alice);
    expect((await flow().complete({ state: first, code: firstCode, error: undefined }, signal)).kind).toBe(
      "redirect",
    );
    const { state, code } = await consent(alice);
    const shredder = createUserShredder({ db: database.db, userDataKeys: { forget: () => undefined } });
    expect(await shredder.shred(alice.userRef)).toBe(1);
    const exchanges = as.requests.length;
    expect(await flow().complete({ state, code, error: undefined }, signal)).toEqual({ kind: "bad_request" });
    expect(as.requests.length).toBe(exchanges);
    expect((await secrets.list(alice, EVERY_PROVIDER, signal)).secrets).toEqual([]);
  });

  it("J162 a forged or malformed state is refused with a plain 400 before any exchange", async () => {
    const before = as.requests.length;
    const forged = "A".repeat(43);
    expect(await flow().complete({ state: forged, code: "x", error: undefined }, signal)).toEqual({
      kind: "bad_request",
    });
    expect(await flow().complete({ state: "short", code: "x", error: undefined }, signal)).toEqual({
      kind: "bad_request",
    });
    expect(await flow().complete({ state: undefined, code: "x", error: undefined }, signal)).toEqual({
      kind: "bad_request",
    });
    expect(as.requests.length).toBe(before);
  });

  it("J163 an expired state sends error=state_expired to the return URL and exchanges nothing", async () => {
    const { state, code } = await consent(alice);
    clock = new Date(Date.now() + 601_000);
    const before = as.requests.length;
    const outcome = await flow().complete({ state, code, error: undefined }, signal);
    expect(outcome).toEqual({ kind: "redirect", location: `${RETURN_URL}?error=state_expired` });
    expect(as.requests.length).toBe(before);
  });

  it("J164 a return URL outside the caller key's allowlist is refused before anything is stored", async () => {
    const bad = [
      "https://evil.example.test/connections/done",
      `${RETURN_URL}/../x`,
      `${RETURN_URL}?next=https://evil.example.test`,
    ];
    for (const returnUrl of bad) {
      const err = await brokerErrorOf(
        flow().start(alice, app, { provider: "test-oauth", scopes: ["read"], returnUrl }, signal),
      );
      expect(err.code).toBe("permission_denied");
    }
    const err = await brokerErrorOf(
      flow().start(alice, other, { provider: "test-oauth", scopes: ["read"], returnUrl: RETURN_URL }, signal),
    );
    expect(err.code).toBe("permission_denied");
    const rows = await database.db.selectFrom("oauth_authorizations").selectAll().execute();
    expect(rows).toEqual([]);
  });

  it("J165 denied consent and provider errors come back as a code only, never the provider's text", async () => {
    const denied = await consent(alice);
    expect(
      await flow().complete({ state: denied.state, code: undefined, error: "access_denied" }, signal),
    ).toEqual({ kind: "redirect", location: `${RETURN_URL}?error=access_denied` });

    const failing = await consent(alice);
    as.failNext(400, { error: "invalid_request", error_description: "PROVIDERTEXT<script>" });
    const outcome = await flow().complete(
      { state: failing.state, code: failing.code, error: undefined },
      signal,
    );
    expect(outcome).toEqual({ kind: "redirect", location: `${RETURN_URL}?error=provider_error` });
    expect(logs.text()).not.toContain("PROVIDERTEXT");

    const down = await consent(alice);
    as.failNext(503, { error: "temporarily_unavailable" });
    expect(await flow().complete({ state: down.state, code: down.code, error: undefined }, signal)).toEqual({
      kind: "redirect",
      location: `${RETURN_URL}?error=provider_unavailable`,
    });
    expect((await secrets.list(alice, EVERY_PROVIDER, signal)).secrets).toEqual([]);
  });

  it("J166 a code issued for another user's authorization is refused (its PKCE verifier does not match)", async () => {
    const alices = await consent(alice);
    const bobs = await consent(bob);
    // Bob's browser brings Alice's code back with Bob's state.
    const outcome = await flow().complete({ state: bobs.state, code: alices.code, error: undefined }, signal);
    expect(outcome).toEqual({ kind: "redirect", location: `${RETURN_URL}?error=provider_error` });
    expect((await secrets.list(bob, EVERY_PROVIDER, signal)).secrets).toEqual([]);
    expect((await secrets.list(alice, EVERY_PROVIDER, signal)).secrets).toEqual([]);
  });

  it("J167 scopes the registry does not offer are refused, and so is a provider without oauth", async () => {
    const err = await brokerErrorOf(
      flow().start(alice, app, { provider: "test-oauth", scopes: ["admin"], returnUrl: RETURN_URL }, signal),
    );
    expect(err.code).toBe("invalid_argument");
    const none = await brokerErrorOf(
      flow().start(alice, app, { provider: "nope", scopes: ["read"], returnUrl: RETURN_URL }, signal),
    );
    expect(none.code).toBe("invalid_argument");
  });

  it("J168 an OAuth provider's tokens cannot be stored with PutSecret (only the connect flow writes them)", async () => {
    const err = await brokerErrorOf(
      secrets.put(
        alice,
        parsePutSecret({
          secretId: "",
          provider: "test-oauth",
          label: "pasted",
          fields: { access_token: "x" },
        }),
        signal,
      ),
    );
    expect(err.code).toBe("failed_precondition");
  });

  it("J169 Facebook-style providers keep only the long-lived token from the exchange at connect", async () => {
    const { state, code } = await consent(alice, "test-facebook", ["read"]);
    const outcome = await flow().complete({ state, code, error: undefined }, signal);
    const secretId = new URL(outcome.kind === "redirect" ? outcome.location : "").searchParams.get(
      "secret_id",
    );
    const [shortLived, longLived] = as.issued.accessTokens.slice(-2);
    const exchange = as.requests.at(-1);
    expect(exchange?.form.get("grant_type")).toBe("fb_exchange_token");
    const opened = await secrets.open(alice, secretId ?? "", signal);
    expect(opened.fields.get("access_token")?.toString()).toBe(longLived);
    expect(opened.fields.get("access_token")?.toString()).not.toBe(shortLived);
    expect(opened.fields.has("refresh_token")).toBe(false);
    const [listed] = (await secrets.list(alice, EVERY_PROVIDER, signal)).secrets;
    expect(listed?.connection?.expiresAt?.getTime()).toBeGreaterThan(Date.now() + 50 * 86_400_000);
  });

  it("J170 a reconnect stores the new tokens as a new version of the same connection", async () => {
    const first = await consent(alice);
    const done = await flow().complete({ state: first.state, code: first.code, error: undefined }, signal);
    const secretId =
      new URL(done.kind === "redirect" ? done.location : "").searchParams.get("secret_id") ?? "";
    const started = await flow().start(
      alice,
      app,
      { provider: "test-oauth", scopes: ["read"], returnUrl: RETURN_URL, secretId },
      signal,
    );
    const url = new URL(started.authorizationUrl);
    const code = as.issueCode({
      challenge: url.searchParams.get("code_challenge") ?? "",
      redirectUri: CALLBACK,
      scope: "read",
    });
    const again = await flow().complete(
      { state: url.searchParams.get("state") ?? "", code, error: undefined },
      signal,
    );
    expect(again).toEqual({ kind: "redirect", location: `${RETURN_URL}?secret_id=${secretId}` });
    const [listed] = (await secrets.list(alice, EVERY_PROVIDER, signal)).secrets;
    expect(listed?.version).toBe(2);
    expect(listed?.connection?.scopes).toEqual(["read"]);
    // Another user's connection cannot be named for a reconnect.
    const err = await brokerErrorOf(
      flow().start(
        bob,
        app,
        { provider: "test-oauth", scopes: ["read"], returnUrl: RETURN_URL, secretId },
        signal,
      ),
    );
    expect(err.code).toBe("not_found");
  });

  it("J171 no token, code, client secret or PKCE verifier reaches logs, redirects, audit rows or the database", async () => {
    const redirects: string[] = [];
    for (let i = 0; i < 2; i += 1) {
      const { state, code } = await consent(alice);
      const outcome = await flow().complete({ state, code, error: undefined }, signal);
      if (outcome.kind === "redirect") redirects.push(outcome.location);
    }
    const failing = await consent(alice);
    as.failNext(400, { error: "invalid_grant" });
    const failed = await flow().complete(
      { state: failing.state, code: failing.code, error: undefined },
      signal,
    );
    if (failed.kind === "redirect") redirects.push(failed.location);
    const verifiers = as.requests
      .map((r) => r.form.get("code_verifier"))
      .filter((v): v is string => v !== null);
    expect(verifiers.length).toBeGreaterThan(0);
    const needles = [
      ...as.issued.accessTokens,
      ...as.issued.refreshTokens,
      ...as.issued.codes,
      ...verifiers,
      as.clientSecret,
    ];
    const audit = await database.db.selectFrom("audit_events").selectAll().execute();
    expect(audit.some((row) => row.action === "oauth.connect" && row.outcome === "ok")).toBe(true);
    expect(findLeaks(logs.text(), needles)).toEqual([]);
    expect(findLeaks(redirects.join("\n"), needles)).toEqual([]);
    expect(
      findLeaks(
        JSON.stringify(audit, (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString("hex") : v)),
        needles,
      ),
    ).toEqual([]);
    expect(findLeaks(await dumpAllRows(database.db), needles)).toEqual([]);
  });

  it("J179 the HTTPS callback answers 303 to the return URL with only the secret id, and a plain 400 for a bad state", async () => {
    const server = createOAuthCallbackServer({
      complete: (q, s) => flow().complete(q, s),
      tls: { cert: Buffer.from(as.certs.cert), key: Buffer.from(as.certs.key), clientCa: undefined },
      logger: logs.logger,
    });
    const port = await server.listen("127.0.0.1", 0);
    const dispatcher = new Agent({ connect: { ca: as.certs.ca } });
    try {
      const { state, code } = await consent(alice);
      const ok = await request(`https://127.0.0.1:${port}/oauth/callback?code=${code}&state=${state}`, {
        dispatcher,
      });
      await ok.body.dump();
      expect(ok.statusCode).toBe(303);
      const location = new URL(String(ok.headers.location));
      expect([...location.searchParams.keys()]).toEqual(["secret_id"]);
      expect(ok.headers["cache-control"]).toBe("no-store");
      expect(ok.headers["referrer-policy"]).toBe("no-referrer");

      const replay = await request(`https://127.0.0.1:${port}/oauth/callback?code=${code}&state=${state}`, {
        dispatcher,
      });
      expect(replay.statusCode).toBe(400);
      const page = await replay.body.text();
      expect(page).not.toContain(code);
      expect(replay.headers.location).toBeUndefined();

      const doubled = await request(
        `https://127.0.0.1:${port}/oauth/callback?code=${code}&state=${state}&state=${state}`,
        { dispatcher },
      );
      await doubled.body.dump();
      expect(doubled.statusCode).toBe(400);
      const other = await request(`https://127.0.0.1:${port}/elsewhere`, { dispatcher });
      await other.body.dump();
      expect(other.statusCode).toBe(404);
      expect(findLeaks(logs.text(), [code, state])).toEqual([]);
    } finally {
      await dispatcher.close();
      await server.close();
    }
  });
});
