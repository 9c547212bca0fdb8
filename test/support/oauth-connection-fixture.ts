import { createHash, randomBytes } from "node:crypto";
import { type AuditLog, createAuditLog } from "../../src/audit/audit-log.js";
import { type AuditActor, createAuditedRunner } from "../../src/audit/audited-operation.js";
import type { UserIdentity } from "../../src/auth/identity.js";
import { createDataKeyCache } from "../../src/keys/data-key-cache.js";
import { loadOrCreatePepper } from "../../src/keys/pepper.js";
import { createUserDataKeys } from "../../src/keys/user-data-keys.js";
import { deriveFingerprintKey } from "../../src/keys/user-ref.js";
import { type ConnectionRefresher, createConnectionRefresher } from "../../src/oauth/connection-refresher.js";
import { createOAuthAppStore, type OAuthAppStore } from "../../src/oauth/oauth-app-store.js";
import { createSecretDeleter, type SecretDeleter } from "../../src/oauth/secret-deleter.js";
import {
  createTokenEndpointClient,
  type TokenEndpointClient,
} from "../../src/oauth/token-endpoint-client.js";
import { type ProviderRegistry, parseProviderRegistry } from "../../src/outbound/provider-registry.js";
import type { OperationClass } from "../../src/policy/operation-class.js";
import { createSecretService, type SecretService } from "../../src/secrets/secret-service.js";
import { type CapturedLogs, captureLogs } from "./captured-logs.js";
import {
  type OAuthClient,
  type OAuthThirdParty,
  startOAuthThirdParty,
  thirdPartyProviderDefinition,
} from "./oauth-third-party.js";
import { createSecretsFixture, type SecretsFixture } from "./secrets-fixture.js";
import type { TestDatabase } from "./test-database.js";

/**
 * The OAuth connection domain on a real database, keyring (AWS SDK against the local KMS) and
 * audit trail, talking to a real authorization server (oidc-provider, oauth-third-party.ts) over
 * HTTPS through the broker's own token-endpoint client. Each `replica()` is another broker on the
 * same database: its own secret service, data-key cache, token client and refresher, so
 * single-flight across replicas is tested through the database alone.
 */
export interface OAuthConnectionFixture {
  readonly party: OAuthThirdParty;
  /** The broker's OAuth app at the third party (its secret is also stored in `oauth_apps`). */
  readonly client: OAuthClient;
  readonly registry: ProviderRegistry;
  readonly secrets: SecretsFixture;
  readonly logs: CapturedLogs;
  readonly audit: AuditLog;
  /** The first replica. */
  readonly broker: BrokerReplica;
  replica(): BrokerReplica;
  /** Moves the brokers' clock (not the provider's) forward: tokens become due without waiting. */
  advance(ms: number): void;
  /** Connects `subject` to provider `tp` through the real authorization-code flow with PKCE. */
  connect(
    user: UserIdentity,
    subject: string,
    provider?: string,
    options?: { grant?: readonly OperationClass[] },
  ): Promise<Connected>;
  /** A Facebook-style connection (`tp-facebook`) whose token lives `ttlSeconds` at the provider. */
  connectFacebook(user: UserIdentity, subject: string, ttlSeconds: number): Promise<Connected>;
  /** Audit rows of `action` for `target`, oldest first, as stored. */
  auditRows(action: string, target: string): Promise<AuditRow[]>;
  actorFor(user: UserIdentity): AuditActor;
  close(): Promise<void>;
}

export interface BrokerReplica {
  readonly secrets: SecretService;
  readonly refresher: ConnectionRefresher;
  readonly deleter: SecretDeleter;
  readonly tokens: TokenEndpointClient;
  readonly apps: OAuthAppStore;
}

export interface Connected {
  readonly secretId: string;
  readonly accessToken: string;
  readonly refreshToken: string | undefined;
}

export interface AuditRow {
  readonly outcome: string;
  readonly code: string | null;
  readonly detail: Record<string, unknown>;
  readonly callerKeyId: string | null;
}

const REDIRECT_URI = "https://broker.test/oauth/callback";

export async function createOAuthConnectionFixture(
  database: TestDatabase,
  options: { accessTokenTtlSeconds?: number; marginSeconds?: number; leaseMs?: number } = {},
): Promise<OAuthConnectionFixture> {
  const party = await startOAuthThirdParty({ accessTokenTtlSeconds: options.accessTokenTtlSeconds ?? 60 });
  const client = party.registerClient({ redirectUris: [REDIRECT_URI] });
  const marginSeconds = options.marginSeconds ?? 10;
  const registry = parseProviderRegistry(
    {
      providers: [
        thirdPartyProviderDefinition(party, { id: "tp", marginSeconds }),
        thirdPartyProviderDefinition(party, { id: "tp-norevoke", marginSeconds, revocation: false }),
        thirdPartyProviderDefinition(party, { id: "tp-facebook", marginSeconds, facebook: true }),
      ],
    },
    { production: false },
  );
  const secrets = await createSecretsFixture(database);
  const logs = captureLogs();
  const audit = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
  const audited = createAuditedRunner({ audit, logger: logs.logger });
  let skewMs = 0;
  const now = () => Date.now() + skewMs;
  const catalog = {
    requiredFields: (id: string) => registry.get(id)?.definition.requiredFields,
    defaultGrant: (id: string) => registry.get(id)?.definition.defaultGrant,
    isOAuth: (id: string) => registry.get(id)?.definition.oauth !== undefined,
  };
  const isOAuthProvider = (id: string) => registry.get(id)?.definition.oauth !== undefined;
  const pepperKey = deriveFingerprintKey(await loadOrCreatePepper(database.db, secrets.keyring));
  const replicas: BrokerReplica[] = [];

  function replica(): BrokerReplica {
    const service = createSecretService({
      db: database.db,
      prepared: database.prepared,
      userDataKeys: createUserDataKeys({
        keyring: secrets.keyring,
        cache: createDataKeyCache({ maxAgeMs: 60_000, maxUses: 100_000, maxEntries: 100 }),
      }),
      fingerprintKey: pepperKey,
      providers: catalog,
      now: () => new Date(now()),
    });
    const tokens = createTokenEndpointClient({ logger: logs.logger, ca: party.ca });
    const apps = createOAuthAppStore({ db: database.db, keyring: secrets.keyring, isOAuthProvider });
    const made: BrokerReplica = {
      secrets: service,
      tokens,
      apps,
      refresher: createConnectionRefresher({
        db: database.db,
        registry,
        apps,
        tokens,
        secrets: service,
        audited,
        logger: logs.logger,
        now,
        ...(options.leaseMs === undefined ? {} : { leaseMs: options.leaseMs }),
      }),
      deleter: createSecretDeleter({
        secrets: service,
        registry,
        apps,
        tokens,
        audited,
        logger: logs.logger,
      }),
    };
    replicas.push(made);
    return made;
  }

  const broker = replica();
  for (const id of ["tp", "tp-norevoke", "tp-facebook"]) {
    await broker.apps.set(id, client.clientId, Buffer.from(client.clientSecret, "latin1"));
  }

  async function storeConnection(
    user: UserIdentity,
    provider: string,
    fields: Record<string, string>,
    expiresInSeconds: number,
    scopes: readonly string[],
    grant?: readonly OperationClass[],
  ): Promise<string> {
    const stored = await broker.secrets.put(
      user,
      {
        secretId: undefined,
        provider,
        label: `${provider} ${randomBytes(3).toString("hex")}`,
        fields: new Map(Object.entries(fields).map(([k, v]) => [k, Buffer.from(v, "latin1")])),
        ...(grant === undefined ? {} : { grant }),
        connection: { status: "active", expiresAt: new Date(now() + expiresInSeconds * 1000), scopes },
      },
      AbortSignal.timeout(10_000),
    );
    return stored.id;
  }

  return {
    party,
    client,
    registry,
    secrets,
    logs,
    audit,
    broker,
    replica,
    advance(ms) {
      skewMs += ms;
    },
    async connect(user, subject, provider = "tp", connectOptions = {}) {
      const verifier = randomBytes(32).toString("base64url");
      const url = new URL(party.authorizationEndpoint);
      url.search = new URLSearchParams({
        client_id: client.clientId,
        response_type: "code",
        redirect_uri: REDIRECT_URI,
        scope: "profile:read files:read",
        state: randomBytes(16).toString("base64url"),
        code_challenge: createHash("sha256").update(verifier).digest("base64url"),
        code_challenge_method: "S256",
      }).toString();
      const redirect = await party.authorize(url.href, { user: subject });
      const code = redirect.searchParams.get("code");
      if (code === null) throw new Error(`no code: ${redirect.searchParams.get("error")}`);
      const tokens = await party.exchangeCode(client, code, REDIRECT_URI, verifier);
      const fields: Record<string, string> = { access_token: tokens.access_token };
      if (tokens.refresh_token !== undefined) fields.refresh_token = tokens.refresh_token;
      const secretId = await storeConnection(
        user,
        provider,
        fields,
        tokens.expires_in,
        (tokens.scope ?? "").split(" ").sort(),
        connectOptions.grant,
      );
      return { secretId, accessToken: tokens.access_token, refreshToken: tokens.refresh_token };
    },
    async connectFacebook(user, subject, ttlSeconds) {
      const accessToken = party.issueFacebookToken(client, subject, ttlSeconds);
      const secretId = await storeConnection(user, "tp-facebook", { access_token: accessToken }, ttlSeconds, [
        "public_profile",
      ]);
      return { secretId, accessToken, refreshToken: undefined };
    },
    async auditRows(action, target) {
      await audit.flush();
      const rows = await database.db
        .selectFrom("audit_events")
        .select(["outcome", "code", "detail", "caller_key_id"])
        .where("action", "=", action)
        .where("target", "=", target)
        .orderBy("seq")
        .execute();
      return rows.map((r) => ({
        outcome: r.outcome,
        code: r.code,
        detail: (typeof r.detail === "string" ? JSON.parse(r.detail) : r.detail) as Record<string, unknown>,
        callerKeyId: r.caller_key_id,
      }));
    },
    actorFor(user) {
      return {
        requestId: `req-${randomBytes(4).toString("hex")}`,
        callerKeyId: "ck_test",
        userRef: user.userRef,
      };
    },
    async close() {
      await audit.close();
      await Promise.all(replicas.map((r) => r.tokens.close()));
      await party.close();
      await secrets.close();
    },
  };
}
