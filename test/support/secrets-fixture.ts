import { createAwsKmsKeyring, createKmsClient } from "../../src/keys/aws-kms-keyring.js";
import { createDataKeyCache } from "../../src/keys/data-key-cache.js";
import type { Keyring } from "../../src/keys/keyring.js";
import { loadOrCreatePepper } from "../../src/keys/pepper.js";
import { createUserDataKeys } from "../../src/keys/user-data-keys.js";
import { deriveFingerprintKey, deriveUserRef } from "../../src/keys/user-ref.js";
import {
  createSecretService,
  type ProviderCatalog,
  type SecretService,
} from "../../src/secrets/secret-service.js";
import { type LocalKmsServer, startLocalKmsServer } from "./local-kms-server.js";
import type { TestDatabase } from "./test-database.js";

/** The secrets domain wired to a real database and the real AWS SDK against the local KMS server. */
export interface SecretsFixture {
  readonly kms: LocalKmsServer;
  /** The keyring the service unwraps with, for tests that craft stored rows themselves. */
  readonly keyring: Keyring;
  readonly secrets: SecretService;
  /**
   * Another broker replica on the same database and KMS: its own, empty data-key cache. With
   * `providers`, it knows their required fields and default grants, as the registry would say.
   */
  newReplica(providers?: ProviderCatalog): SecretService;
  readonly userRefOf: (subject: string) => Buffer;
  close(): Promise<void>;
}

export const TEST_ISSUER = "https://tenant.example.auth0.com/";

export async function createSecretsFixture(
  database: TestDatabase,
  cache = { maxAgeMs: 60_000, maxUses: 100_000, maxEntries: 100 },
): Promise<SecretsFixture> {
  const kms = await startLocalKmsServer();
  const keyArn = kms.createKey("test master key");
  const client = createKmsClient({
    region: kms.region,
    endpoint: kms.endpoint,
    maxAttempts: 2,
    credentials: { accessKeyId: "test", secretAccessKey: "test" },
  });
  const keyring = createAwsKmsKeyring({ client, keyId: keyArn });
  const pepper = await loadOrCreatePepper(database.db, keyring);
  const replica = (providers?: ProviderCatalog) =>
    createSecretService({
      db: database.db,
      prepared: database.prepared,
      userDataKeys: createUserDataKeys({ keyring, cache: createDataKeyCache(cache) }),
      fingerprintKey: deriveFingerprintKey(pepper),
      ...(providers === undefined ? {} : { providers }),
    });
  return {
    kms,
    keyring,
    secrets: replica(),
    newReplica: replica,
    userRefOf: (subject) => deriveUserRef(pepper, TEST_ISSUER, subject),
    async close() {
      client.destroy();
      await kms.close();
    },
  };
}
