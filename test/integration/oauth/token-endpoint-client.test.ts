import { createServer, type Server } from "node:https";
import type { AddressInfo } from "node:net";
import { sql } from "kysely";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { createOAuthAppStore, type OAuthAppStore } from "../../../src/oauth/oauth-app-store.js";
import { s256Challenge } from "../../../src/oauth/pkce.js";
import {
  createTokenEndpointClient,
  type TokenEndpointClient,
} from "../../../src/oauth/token-endpoint-client.js";
import {
  InvalidGrant,
  ProviderError,
  ProviderUnavailable,
} from "../../../src/oauth/token-endpoint-errors.js";
import { type Provider, parseProviderRegistry } from "../../../src/outbound/provider-registry.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { type CapturedLogs, captureLogs, findLeaks } from "../../support/captured-logs.js";
import {
  oauthTestProvider,
  startTestAuthorizationServer,
  type TestAuthorizationServer,
} from "../../support/oauth-token-endpoint.js";
import { createSecretsFixture, type SecretsFixture } from "../../support/secrets-fixture.js";
import { createTestDatabase, dumpAllRows, type TestDatabase } from "../../support/test-database.js";

const signal = new AbortController().signal;
const VERIFIER = "dBjftJeZ4CVP-mJ92K9tZsAnHqDcQMlN2xdb5dzeWcg";

describe("OAuth token endpoint client and app credentials", () => {
  let database: TestDatabase;
  let fixture: SecretsFixture;
  let as: TestAuthorizationServer;
  let logs: CapturedLogs;
  let client: TokenEndpointClient;
  let apps: OAuthAppStore;
  let post: Provider;
  let basic: Provider;
  let raw: Server;
  let rawPort = 0;
  let rawAnswer = { status: 200, body: "{}" };

  beforeAll(async () => {
    database = await createTestDatabase("pglite");
    fixture = await createSecretsFixture(database);
    as = await startTestAuthorizationServer();
    logs = captureLogs();
    raw = createServer({ key: as.certs.key, cert: as.certs.cert }, (req, res) => {
      req.resume();
      req.on("end", () => {
        res.writeHead(rawAnswer.status, { "content-type": "application/json" });
        res.end(rawAnswer.body);
      });
    });
    await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));
    rawPort = (raw.address() as AddressInfo).port;
    const registry = parseProviderRegistry(
      {
        providers: [
          oauthTestProvider("t-post", as.port),
          oauthTestProvider("t-basic", as.port, { tokenAuthMethod: "client_secret_basic" }),
          oauthTestProvider("t-raw", rawPort),
          {
            ...oauthTestProvider("t-internal", as.port),
            allowLoopback: false,
            baseUrl: "https://localhost.example.test/api",
            allowedHosts: ["localhost.example.test", "127.0.0.1"],
          },
        ],
      },
      { production: false },
    );
    post = registry.get("t-post") as Provider;
    basic = registry.get("t-basic") as Provider;
    client = createTokenEndpointClient({ logger: logs.logger, ca: as.certs.ca });
    apps = createOAuthAppStore({
      db: database.db,
      keyring: fixture.keyring,
      isOAuthProvider: (id) => registry.get(id)?.definition.oauth !== undefined,
    });
  });

  afterAll(async () => {
    await client.close();
    await new Promise<void>((resolve) => raw.close(() => resolve()));
    await as.close();
    await fixture.close();
    await database.close();
  });

  beforeEach(async () => {
    await sql`truncate table oauth_apps`.execute(database.db);
  });

  const appFor = async (provider: string) => {
    await apps.set(provider, as.clientId, Buffer.from(as.clientSecret));
    return apps.get(provider);
  };

  it("exchanges, refreshes with rotation and revokes, authenticating as client_secret_post and _basic", async () => {
    for (const provider of [post, basic]) {
      const app = await appFor(provider.definition.id);
      const code = as.issueCode({
        challenge: s256Challenge(VERIFIER),
        redirectUri: "https://cb",
      });
      const issued = await client.exchangeCode({
        provider,
        app,
        code,
        codeVerifier: Buffer.from(VERIFIER),
        redirectUri: "https://cb",
        signal,
      });
      expect(issued.accessToken.toString()).toBe(as.issued.accessTokens.at(-1));
      expect(issued.expiresInSeconds).toBe(3600);
      const request = as.requests.at(-1);
      if (provider === basic) {
        expect(request?.authorization).toMatch(/^Basic /);
        expect(request?.form.get("client_secret")).toBeNull();
      } else {
        expect(request?.authorization).toBeUndefined();
        expect(request?.form.get("client_secret")).toBe(as.clientSecret);
      }
      const refreshed = await client.refresh({
        provider,
        app,
        refreshToken: issued.refreshToken as Buffer,
        signal,
      });
      expect(refreshed.refreshToken?.toString()).not.toBe(issued.refreshToken?.toString());
      expect(
        await client.revoke({
          provider,
          app,
          token: refreshed.refreshToken as Buffer,
          tokenTypeHint: "refresh_token",
          signal,
        }),
      ).toBe("revoked");
      // The rotated-away refresh token is invalid_grant.
      await expect(
        client.refresh({ provider, app, refreshToken: issued.refreshToken as Buffer, signal }),
      ).rejects.toBeInstanceOf(InvalidGrant);
    }
  });

  it("J175 parses token answers strictly and maps failures to InvalidGrant, ProviderUnavailable or ProviderError", async () => {
    await apps.set("t-raw", as.clientId, Buffer.from(as.clientSecret));
    const app = await apps.get("t-raw");
    const rawProvider = parseProviderRegistry(
      { providers: [oauthTestProvider("t-raw", rawPort)] },
      { production: false },
    ).get("t-raw") as Provider;
    const call = () => client.refresh({ provider: rawProvider, app, refreshToken: Buffer.from("r"), signal });
    const cases: Array<[number, string, unknown]> = [
      [200, "not json", ProviderError],
      [200, "[]", ProviderError],
      [200, JSON.stringify({ token_type: "bearer" }), ProviderError],
      [200, JSON.stringify({ access_token: "a b", token_type: "bearer" }), ProviderError],
      [200, JSON.stringify({ access_token: "tok", token_type: "mac" }), ProviderError],
      [200, JSON.stringify({ access_token: "tok", token_type: "bearer", expires_in: -5 }), ProviderError],
      [200, JSON.stringify({ ok: false, error: "invalid_code" }), ProviderError],
      [
        200,
        JSON.stringify({ error: "bad_verification_code", error_description: "PROVIDERTEXT" }),
        ProviderError,
      ],
      [400, JSON.stringify({ error: "invalid_grant", error_description: "PROVIDERTEXT" }), InvalidGrant],
      [401, JSON.stringify({ error: "invalid_client" }), ProviderError],
      [503, "<html>down</html>", ProviderUnavailable],
      [429, "{}", ProviderUnavailable],
    ];
    for (const [status, body, type] of cases) {
      rawAnswer = { status, body };
      const err = await call().then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err, `${status} ${body}`).toBeInstanceOf(type);
      expect((err as Error).message).not.toContain("PROVIDERTEXT");
    }
    rawAnswer = {
      status: 200,
      body: JSON.stringify({ access_token: "tok", token_type: "BEARER", expires_in: "120", scope: "b,a a" }),
    };
    const ok = await call();
    expect(ok.expiresInSeconds).toBe(120);
    expect(ok.scopes).toEqual(["a", "b"]);
    expect(logs.text()).not.toContain("PROVIDERTEXT");
  });

  it("J176 a token endpoint outside the guard (loopback for a provider without allowLoopback) is never dialled", async () => {
    await apps.set("t-internal", as.clientId, Buffer.from(as.clientSecret));
    const registry = parseProviderRegistry(
      {
        providers: [
          {
            ...oauthTestProvider("t-internal", as.port),
            allowLoopback: false,
            baseUrl: "https://localhost.example.test/api",
            allowedHosts: ["localhost.example.test", "127.0.0.1"],
            oauth: {
              ...(oauthTestProvider("t-internal", as.port).oauth as object),
              tokenEndpoint: `https://127.0.0.1:${as.port}/token`,
            },
          },
        ],
      },
      { production: false },
    );
    const before = as.requests.length;
    const err = await client
      .refresh({
        provider: registry.get("t-internal") as Provider,
        app: await apps.get("t-internal"),
        refreshToken: Buffer.from("r"),
        signal,
      })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(ProviderError);
    expect(as.requests.length).toBe(before);
  });

  it("J177 an app's client secret is sealed by the keyring and bound to its provider and version", async () => {
    const first = await apps.set("t-post", as.clientId, Buffer.from(as.clientSecret));
    expect(first.version).toBe(1);
    const rotated = await apps.rotate("t-post", Buffer.from(`${as.clientSecret}2`));
    expect(rotated.version).toBe(2);
    expect((await apps.get("t-post")).clientSecret.toString()).toBe(`${as.clientSecret}2`);
    await apps.set("t-basic", "another-client", Buffer.from("basic-secret-value-1"));
    expect(findLeaks(await dumpAllRows(database.db), [as.clientSecret, "basic-secret-value-1"])).toEqual([]);

    // A row copied onto another provider, or rolled back to an older version, does not open.
    const row = await database.db
      .selectFrom("oauth_apps")
      .selectAll()
      .where("provider", "=", "t-post")
      .executeTakeFirstOrThrow();
    await database.db
      .updateTable("oauth_apps")
      .set({
        wrapped_key: row.wrapped_key,
        secret_ciphertext: row.secret_ciphertext,
        master_key_id: row.master_key_id,
        version: 2,
        client_id: row.client_id,
      })
      .where("provider", "=", "t-basic")
      .execute();
    expect((await brokerErrorOf(apps.get("t-basic"))).code).toBe("data_loss");
    await database.db
      .updateTable("oauth_apps")
      .set({ version: 1 })
      .where("provider", "=", "t-post")
      .execute();
    expect((await brokerErrorOf(apps.get("t-post"))).code).toBe("data_loss");

    expect((await brokerErrorOf(apps.rotate("t-raw", Buffer.from("x")))).code).toBe("not_found");
    expect((await brokerErrorOf(apps.set("github", "id", Buffer.from("x")))).code).toBe("invalid_argument");
    expect((await brokerErrorOf(apps.set("t-post", "id with space", Buffer.from("x")))).code).toBe(
      "invalid_argument",
    );
    expect((await brokerErrorOf(apps.get("t-raw"))).code).toBe("failed_precondition");
    expect((await apps.list()).map((a) => a.provider)).toEqual(["t-basic", "t-post"]);
  });
});
