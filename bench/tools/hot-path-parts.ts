import { createCallerKeyAdmin } from "../../src/admin/caller-key-admin.js";
import { createCallerAuthenticator } from "../../src/auth/caller-authenticator.js";
import { createTokenVerifier } from "../../src/auth/token-verifier.js";
import { createAwsKmsKeyring, createKmsClient } from "../../src/keys/aws-kms-keyring.js";
import { createDataKeyCache } from "../../src/keys/data-key-cache.js";
import { loadOrCreatePepper } from "../../src/keys/pepper.js";
import { createUserDataKeys } from "../../src/keys/user-data-keys.js";
import { deriveFingerprintKey, deriveUserRef } from "../../src/keys/user-ref.js";
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { parsePutSecret } from "../../src/secrets/secret-input.js";
import { createSecretService } from "../../src/secrets/secret-service.js";
import { createCallerKeyLookup } from "../../src/store/caller-keys.repository.js";
import { openDatabase } from "../../src/store/database.js";
import { migrateToLatest } from "../../src/store/migrate.js";
import { startLocalKmsServer } from "../../test/support/local-kms-server.js";
import { startTestIssuer } from "../../test/support/test-issuer.js";
import { createThrowawayDatabase } from "../../test/support/throwaway-database.js";

const N = Number(process.env.N ?? 3000);
const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

async function cpuPerCall(name: string, fn: () => Promise<unknown>): Promise<void> {
  for (let i = 0; i < 300; i++) await fn();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < N; i++) await fn();
  const c = process.cpuUsage(c0);
  const wall = performance.now() - t0;
  console.log(
    `${name.padEnd(40)} ${(((c.user + c.system) / N) | 0).toString().padStart(6)} µs CPU/call  ${((wall * 1000) / N).toFixed(0).padStart(6)} µs wall/call`,
  );
}

const throwaway = await createThrowawayDatabase(ADMIN_URL, "keybroker_parts");
const database = await openDatabase(
  {
    kind: "postgres",
    url: new Redacted(throwaway.url),
    maxConnections: 4,
    connectTimeoutMs: 5000,
    statementTimeoutMs: 30000,
  },
  createLogger({ level: "silent" }),
);
const kms = await startLocalKmsServer();
const issuer = await startTestIssuer();
try {
  await migrateToLatest(database.db);
  const client = createKmsClient({
    region: kms.region,
    endpoint: kms.endpoint,
    maxAttempts: 2,
    credentials: { accessKeyId: "a", secretAccessKey: "b" },
  });
  const keyring = createAwsKmsKeyring({ client, keyId: kms.createKey() });
  const pepper = await loadOrCreatePepper(database.db, keyring);
  const secrets = createSecretService({
    db: database.db,
    prepared: database.prepared,
    userDataKeys: createUserDataKeys({
      keyring,
      cache: createDataKeyCache({ maxAgeMs: 600_000, maxUses: 1_000_000, maxEntries: 100 }),
    }),
    fingerprintKey: deriveFingerprintKey(pepper),
  });
  const tokens = createTokenVerifier({
    issuer: issuer.issuer,
    audience: issuer.audience,
    jwksUrl: issuer.jwksUrl,
    requiredPermission: issuer.permission,
    clockToleranceSec: 10,
    jwksCacheMaxAgeMs: 600_000,
    jwksCooldownMs: 30_000,
    jwksTimeoutMs: 5000,
    cacheMaxEntries: 1000,
    deriveUserRef: (iss, sub) => deriveUserRef(pepper, iss, sub),
  });
  const callers = createCallerAuthenticator({
    lookup: createCallerKeyLookup(database.prepared),
  });
  const { key } = await createCallerKeyAdmin({ db: database.db }).create({
    name: "parts",
    scopes: ["secrets:read"],
    expiresAt: null,
  });
  const token = await issuer.sign({ sub: "auth0|parts" });
  const user = await tokens.verify(token);
  const signal = new AbortController().signal;
  await secrets.put(
    user,
    parsePutSecret({
      secretId: "",
      provider: "github",
      label: "x",
      fields: { token: "abcdefghijklmnopqrstuvwxyz" },
    }),
    signal,
  );

  await cpuPerCall("caller key: parse + lookup (prepared)", () => callers.authenticate(key, "secrets:read"));
  await cpuPerCall("token verify (cached)", () => tokens.verify(token));
  await cpuPerCall("secrets.list (1 query, 1 hint)", () =>
    secrets.list(user, { provider: undefined, pageSize: 0, pageToken: "" }, signal),
  );
  await cpuPerCall("raw pg select 1", () => database.db.selectNoFrom((eb) => eb.val(1).as("one")).execute());
  client.destroy();
} finally {
  await database.close();
  await kms.close();
  await issuer.close();
  await throwaway.drop();
}
