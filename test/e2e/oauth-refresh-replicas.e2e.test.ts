import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { type Client, credentials, type GrpcObject, loadPackageDefinition, status } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createCallerKeyAdmin } from "../../src/admin/caller-key-admin.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.js";
import { createAwsKmsKeyring, createKmsClient } from "../../src/keys/aws-kms-keyring.js";
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { createOAuthAppStore } from "../../src/oauth/oauth-app-store.js";
import { type DatabaseHandle, openDatabase } from "../../src/store/database.js";
import {
  type BrokerChild,
  type BrokerDependencies,
  spawnBroker,
  startBrokerDependencies,
} from "../faults/fault-fixture.js";
import {
  asServiceError,
  createGrpcClients,
  type GrpcClients,
  PROTO_LOADER_OPTIONS,
  unary,
} from "../support/grpc-client.js";
import { createCanaryRegistry, describeLeaks } from "../support/leak-sweep.js";
import { bearerUpstreamProvider } from "../support/loopback-providers.js";
import {
  type OAuthClient,
  type OAuthThirdParty,
  startOAuthThirdParty,
  thirdPartyProviderDefinition,
} from "../support/oauth-third-party.js";
import { POSTGRES_SKIP_REASON } from "../support/skip-reasons.js";
import { createTestDatabase, dumpAllRows, type TestDatabase } from "../support/test-database.js";

// Issue 15 "Must show", outside in: two `keybroker serve` processes on one Postgres, an OAuth
// connection to a real authorization server (oidc-provider: PKCE, access tokens of a few
// seconds, refresh tokens that rotate with reuse detection, RFC 7009 revocation), and proxied
// calls to its protected resource, which answers only to a live access token. The tests run in
// order and follow one user: connect (StartConnection, the provider's login and consent driven
// headlessly, the broker's public callback), call, expiry and refresh, a race of both processes,
// revocation at the provider, DeleteSecret, and the leak sweep over everything.

const missing = !process.env.TEST_DATABASE_URL;
// Long enough for the first calls to finish on a loaded machine before the token expires.
const TTL_S = 8;
const RETURN_URL = "https://app.oauth.test/connected";
const SUBJECT = "oauth|refresh-replicas-user";

describe.skipIf(missing)(
  missing
    ? `OAuth refresh across two broker processes (${POSTGRES_SKIP_REASON})`
    : "OAuth refresh across two broker processes",
  () => {
    let deps: BrokerDependencies;
    let party: OAuthThirdParty;
    let client: OAuthClient;
    let database: TestDatabase;
    let seeding: DatabaseHandle;
    let dir: string;
    const brokers: BrokerChild[] = [];
    const clients: GrpcClients[] = [];
    const responses: string[] = [];
    const canaries = createCanaryRegistry();
    let token: string;
    let secretId: string;
    let appKey: string;
    let connections: Client;

    beforeAll(async () => {
      deps = await startBrokerDependencies();
      party = await startOAuthThirdParty({ accessTokenTtlSeconds: TTL_S });
      // Process A serves the public callback; the provider knows it as the app's redirect URI.
      const publicPort = await freePort();
      const callbackUrl = `http://127.0.0.1:${publicPort}/oauth/callback`;
      client = party.registerClient({ redirectUris: [callbackUrl] });
      canaries.register("client-secret", client.clientSecret);
      database = await createTestDatabase("postgres");
      dir = await mkdtemp(join(tmpdir(), "keybroker-oauth-"));
      const providersFile = join(dir, "providers.json");
      const caFile = join(dir, "outbound-ca.pem");
      await writeFile(
        providersFile,
        JSON.stringify({
          providers: [
            bearerUpstreamProvider("test-upstream", deps.upstream.port),
            thirdPartyProviderDefinition(party, { id: "tp", marginSeconds: 1 }),
          ],
        }),
      );
      // One bundle: the test upstream's CA and the provider's.
      await writeFile(caFile, `${deps.upstream.ca}\n${party.ca}`);
      const env = { KEYBROKER_PROVIDERS_FILE: providersFile, KEYBROKER_OUTBOUND_CA_FILE: caFile };
      // Plain http on loopback only outside production (the loopback relaxation is on here).
      const publicEnv = {
        KEYBROKER_PUBLIC_HOST: "127.0.0.1",
        KEYBROKER_PUBLIC_PORT: String(publicPort),
        KEYBROKER_OAUTH_CALLBACK_URL: callbackUrl,
        KEYBROKER_OAUTH_RETURN_URLS: JSON.stringify({ "main-app": [RETURN_URL] }),
      };
      for (let i = 0; i < 2; i++) {
        const child = await spawnBroker(deps, database.url ?? "", i === 0 ? { ...env, ...publicEnv } : env);
        brokers.push(child);
        clients.push(createGrpcClients(child.grpcAddress));
      }
      seeding = await openDatabase(
        {
          kind: "postgres",
          url: new Redacted(database.url ?? ""),
          maxConnections: 2,
          connectTimeoutMs: 5_000,
          statementTimeoutMs: 30_000,
        },
        createLogger({ level: "silent" }),
      );
      token = await deps.issuer.sign({ sub: SUBJECT });
      // The operator's part: the main app's caller key (with oauth:connect) and the OAuth app.
      appKey = (
        await createCallerKeyAdmin({ db: seeding.db }).create({
          name: "main-app",
          scopes: ["secrets:read", "secrets:write", "proxy:call", "oauth:connect"],
          expiresAt: null,
        })
      ).key;
      await setOAuthApp();
      connections = connectionClient(brokers[0]?.grpcAddress ?? "");
    }, 180_000);

    afterAll(async () => {
      connections?.close();
      for (const c of clients) c.close();
      await Promise.all(brokers.map((b) => b.close()));
      await seeding?.close();
      await database?.close();
      await party?.close();
      await deps?.close();
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    });

    /** `keybroker oauth-apps set` does this; here through the same store, same database and KMS key. */
    async function setOAuthApp(): Promise<void> {
      const kms = createKmsClient({
        region: deps.kms.region,
        endpoint: deps.kms.endpoint,
        maxAttempts: 2,
        credentials: { accessKeyId: "test", secretAccessKey: "test" },
      });
      try {
        const keyring = createAwsKmsKeyring({ client: kms, keyId: deps.keyArn });
        const apps = createOAuthAppStore({ db: seeding.db, keyring, isOAuthProvider: (id) => id === "tp" });
        await apps.set("tp", client.clientId, Buffer.from(client.clientSecret, "latin1"));
      } finally {
        kms.destroy();
      }
    }

    /**
     * The user's part: the app asks process A for an authorization URL, the browser logs in and
     * consents at the provider, comes back to A's public callback, and lands on the app's return
     * URL with the new connection's id — the only thing the app ever learns.
     */
    async function connectThroughBroker(): Promise<string> {
      const { response } = await unary(
        connections,
        "StartConnection",
        { provider: "tp", scopes: ["profile:read", "files:read"], returnUrl: RETURN_URL },
        { callerKey: appKey, bearerToken: token },
      );
      responses.push(JSON.stringify(response));
      const callback = await party.authorize(String(response.authorizationUrl), { user: SUBJECT });
      canaries.register("code", callback.searchParams.get("code") ?? "");
      const landed = await fetch(callback.href, { redirect: "manual" });
      const location = landed.headers.get("location") ?? "";
      responses.push(location);
      expect(landed.status).toBe(303);
      const back = new URL(location);
      expect(`${back.origin}${back.pathname}`).toBe(RETURN_URL);
      expect([...back.searchParams.keys()]).toEqual(["secret_id"]);
      return back.searchParams.get("secret_id") ?? "";
    }

    const callOn = async (i: number) => {
      const { response } = await unary(
        (clients[i] as GrpcClients).proxy,
        "Call",
        { secretId, method: "GET", path: "/me" },
        { callerKey: appKey, bearerToken: token },
      );
      const body = Buffer.from(response.body as Uint8Array).toString("utf8");
      responses.push(JSON.stringify(response), body);
      return { status: response.status as number, body };
    };

    async function refusalOf(call: Promise<unknown>): Promise<{ code: number; reason: string | undefined }> {
      try {
        await call;
      } catch (err) {
        const e = asServiceError(err);
        responses.push(e.message);
        const bin = e.metadata.get("grpc-status-details-bin")[0];
        const info =
          bin instanceof Buffer
            ? fromBinary(StatusSchema, bin)
                .details.map((d) => anyUnpack(d, ErrorInfoSchema))
                .find((i) => i !== undefined)
            : undefined;
        return { code: e.code, reason: info?.reason };
      }
      return { code: status.OK, reason: undefined };
    }

    /** Waits (bounded) until every access token issued so far has expired at the provider. */
    async function untilExpired(): Promise<void> {
      await new Promise((r) => setTimeout(r, TTL_S * 1000 + 1_100));
    }

    const refreshes = () => party.grants.filter((g) => g.grantType === "refresh_token");

    it("J189 StartConnection and the public callback connect the user through the provider's login and consent; the app gets only the connection's id", async () => {
      secretId = await connectThroughBroker();
      expect(secretId).toMatch(/^[0-9a-f-]{36}$/);
      const { response } = await unary(
        (clients[1] as GrpcClients).secrets,
        "ListSecrets",
        {},
        { callerKey: appKey, bearerToken: token },
      );
      responses.push(JSON.stringify(response));
      const listed = (response.secrets as Array<Record<string, unknown>>).find((x) => x.id === secretId);
      expect(listed).toMatchObject({ provider: "tp", fieldNames: ["access_token", "refresh_token"] });
    });

    it("J195 the connection is used through the proxy on either process", async () => {
      const a = await callOn(0);
      expect(a.status).toBe(200);
      expect(JSON.parse(a.body)).toEqual({ user: SUBJECT, scope: "profile:read files:read" });
      expect((await callOn(1)).status).toBe(200);
      expect(refreshes()).toEqual([]);
    });

    it("J196 once the access token has expired, the next call refreshes it first and succeeds", async () => {
      await untilExpired();
      const before = party.resourceCalls.length;
      expect((await callOn(1)).status).toBe(200);
      expect(refreshes()).toEqual([
        { grantType: "refresh_token", error: undefined, clientId: client.clientId },
      ]);
      // The resource saw only the new token: the expired one was never sent.
      expect(party.resourceCalls.slice(before)).toEqual([{ status: 200, user: SUBJECT }]);
    });

    it("J197 both processes racing the refresh of an expired token make exactly one refresh at the provider", async () => {
      await untilExpired();
      party.setTokenDelay(400);
      const before = refreshes().length;
      try {
        const results = await Promise.all([0, 1, 0, 1, 0, 1, 0, 1].map((i) => callOn(i)));
        expect(results.map((r) => r.status)).toEqual([200, 200, 200, 200, 200, 200, 200, 200]);
      } finally {
        party.setTokenDelay(0);
      }
      // One, and it succeeded: a second one would have presented the rotated-out refresh token,
      // which the provider answers with invalid_grant and a revoked grant.
      expect(refreshes().slice(before)).toEqual([
        { grantType: "refresh_token", error: undefined, clientId: client.clientId },
      ]);
    });

    it("J198 after the user revokes the app at the provider, the next refresh answers FAILED_PRECONDITION (reconnect), and later calls on either process do not ask the provider", async () => {
      expect(await party.revokeGrants(SUBJECT)).toBe(1);
      await untilExpired();
      const first = await refusalOf(callOn(0));
      expect(first).toEqual({ code: status.FAILED_PRECONDITION, reason: "CONNECTION_NEEDS_RECONSENT" });
      expect(refreshes().at(-1)).toEqual({
        grantType: "refresh_token",
        error: "invalid_grant",
        clientId: client.clientId,
      });
      const grants = party.grants.length;
      expect(await refusalOf(callOn(1))).toEqual({
        code: status.FAILED_PRECONDITION,
        reason: "CONNECTION_NEEDS_RECONSENT",
      });
      expect(await refusalOf(callOn(0))).toMatchObject({ code: status.FAILED_PRECONDITION });
      expect(party.grants.length).toBe(grants);
    });

    it("J199 DeleteSecret of a live connection revokes it at the provider; no token, code, client secret or PKCE verifier is in any log, response, redirect, audit row or the database", async () => {
      // A second, live connection to delete (the first one's grant is gone).
      const live = await connectThroughBroker();
      const before = party.revocations.length;
      await unary(
        (clients[1] as GrpcClients).secrets,
        "DeleteSecret",
        { secretId: live },
        { callerKey: appKey, bearerToken: token },
      );
      expect(party.revocations.slice(before)).toEqual([
        { tokenTypeHint: "refresh_token", kind: "RefreshToken", status: 200 },
      ]);

      for (const value of party.issuedValues) canaries.register("provider-issued", value);
      const hits = [
        ...brokers.flatMap((b, i) => canaries.scan(`broker ${i} output`, b.output())),
        ...canaries.scan("responses", responses.join("\n")),
        ...canaries.scan("database", await dumpAllRows(seeding.db)),
      ];
      expect(hits, describeLeaks(hits)).toEqual([]);
      // The sweep looked at something: the brokers logged their token-endpoint requests.
      expect(brokers[0]?.output()).toContain("token endpoint answered");
    });
  },
);

/** A loopback port nothing listens on now (bound, then released) for a listener to take. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** ConnectionService over grpc-js, from its .proto as the main app would load it. */
function connectionClient(address: string): Client {
  const root = fileURLToPath(new URL("../../proto", import.meta.url));
  const definition = loadSync(["keybroker/v1/connections.proto"], {
    ...PROTO_LOADER_OPTIONS,
    includeDirs: [root],
  });
  const v1 = ((loadPackageDefinition(definition).keybroker as GrpcObject).v1 as GrpcObject).ConnectionService;
  const Ctor = v1 as unknown as new (
    address: string,
    creds: ReturnType<typeof credentials.createInsecure>,
  ) => Client;
  return new Ctor(address, credentials.createInsecure());
}
