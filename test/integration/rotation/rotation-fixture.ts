import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { KMSClient } from "@aws-sdk/client-kms";
import { sql } from "kysely";
import type { UserIdentity } from "../../../src/auth/identity.js";
import { createAwsKmsKeyring, createKmsClient } from "../../../src/keys/aws-kms-keyring.js";
import { createDataKeyCache } from "../../../src/keys/data-key-cache.js";
import type { Keyring } from "../../../src/keys/keyring.js";
import { loadOrCreateLocalKeyring } from "../../../src/keys/local-keyring.js";
import { addLocalKeyVersion, disableLocalKeyVersion } from "../../../src/keys/local-keyring-file.js";
import { loadOrCreatePepper } from "../../../src/keys/pepper.js";
import { createUserDataKeys } from "../../../src/keys/user-data-keys.js";
import { deriveFingerprintKey, deriveUserRef } from "../../../src/keys/user-ref.js";
import { createLogger } from "../../../src/log/logger.js";
import { parsePutSecret } from "../../../src/secrets/secret-input.js";
import { createSecretService, type SecretService } from "../../../src/secrets/secret-service.js";
import type { DatabaseHandle } from "../../../src/store/database.js";
import { type LocalKmsServer, startLocalKmsServer } from "../../support/local-kms-server.js";
import type { TestDatabase } from "../../support/test-database.js";

export type KeyringKind = "aws-kms" | "local";
export const KEYRING_KINDS: KeyringKind[] = ["aws-kms", "local"];

const ISSUER = "https://tenant.example.auth0.com/";
export const signal = new AbortController().signal;
export const silentLogger = createLogger({ level: "silent" });

/** Calls per keyring verb, counted around the real keyring. */
export interface KeyringCalls {
  generateDataKey: number;
  decrypt: number;
  reEncrypt: number;
}

export interface SeededUser {
  readonly identity: UserIdentity;
  /** Secret id → the api_key value stored in its current version. */
  readonly secrets: Map<string, string>;
}

/**
 * A real keyring of either kind over a real database, with the secrets domain wired as the
 * broker wires it: AWS KMS through the real SDK against the local KMS server, or the local
 * keyring in a temporary file.
 */
export interface RotationFixture {
  readonly kind: KeyringKind;
  /** The real keyring, with calls counted. */
  readonly keyring: Keyring;
  readonly calls: KeyringCalls;
  /** The master key everything is wrapped under at the start. */
  readonly sourceKeyId: string;
  /** The user-ref pepper as loaded at the start (a copy, to compare with a reload). */
  readonly pepper: Buffer;
  /** Only for aws-kms: the server, for faults and its own call counts. */
  readonly kms: LocalKmsServer | undefined;
  /** A new master key (AWS: a new KMS key; local: a new version, which becomes current). */
  addMasterKey(): Promise<string>;
  disableMasterKey(keyId: string): Promise<void>;
  /**
   * A broker restarted on `keyId` (AWS: a config change; local: the file's current version,
   * which addMasterKey moved). Calls are not counted.
   */
  pointAt(keyId: string): Promise<Keyring>;
  /** Another broker replica: the same database and keyring, its own empty data-key cache. */
  replica(keyring?: Keyring): SecretService;
  identity(subject: string): UserIdentity;
  /** `count` users, each with `secretsPerUser` secrets; every second secret gets a version 2. */
  seedUsers(count: number, secretsPerUser?: number): Promise<SeededUser[]>;
  close(): Promise<void>;
}

export function countCalls(inner: Keyring, calls: KeyringCalls): Keyring {
  return {
    kind: inner.kind,
    currentKeyId: () => inner.currentKeyId(),
    generateDataKey(context, options) {
      calls.generateDataKey += 1;
      return inner.generateDataKey(context, options);
    },
    decrypt(wrapped, context, options) {
      calls.decrypt += 1;
      return inner.decrypt(wrapped, context, options);
    },
    reEncrypt(wrapped, context, destination, options) {
      calls.reEncrypt += 1;
      return inner.reEncrypt(wrapped, context, destination, options);
    },
  };
}

/** Empties every table the rotation touches, the pepper included (each test seeds its own). */
export async function emptyDatabase(database: Pick<TestDatabase, "db">): Promise<void> {
  await sql`truncate table secret_versions, secrets, users, broker_state, rewrap_ranges, oauth_apps cascade`.execute(
    database.db,
  );
}

export async function createRotationFixture(
  database: Pick<DatabaseHandle, "db" | "prepared">,
  kind: KeyringKind,
  options: { kmsMaxAttempts?: number; localKeyringPath?: string } = {},
): Promise<RotationFixture> {
  const calls: KeyringCalls = { generateDataKey: 0, decrypt: 0, reEncrypt: 0 };
  let base: Keyring;
  let kms: LocalKmsServer | undefined;
  let client: KMSClient | undefined;
  let dir: string | undefined;
  let addMasterKey: () => Promise<string>;
  let disableMasterKey: (keyId: string) => Promise<void>;
  let pointAt: (keyId: string) => Promise<Keyring>;

  if (kind === "aws-kms") {
    const server = await startLocalKmsServer();
    kms = server;
    const keyArn = server.createKey("rotation source key");
    client = createKmsClient({
      region: server.region,
      endpoint: server.endpoint,
      maxAttempts: options.kmsMaxAttempts ?? 2,
      credentials: { accessKeyId: "test", secretAccessKey: "test" },
      requestTimeoutMs: 5_000,
    });
    base = createAwsKmsKeyring({ client, keyId: keyArn });
    addMasterKey = async () => server.createKey("rotation target key");
    disableMasterKey = async (keyId) => server.disableKey(keyId);
    pointAt = async (keyId) => createAwsKmsKeyring({ client: client as KMSClient, keyId });
  } else {
    if (options.localKeyringPath === undefined) dir = await mkdtemp(join(tmpdir(), "keybroker-rotation-"));
    const path = options.localKeyringPath ?? join(dir ?? "", "keyring.json");
    base = await loadOrCreateLocalKeyring({ path, nodeEnv: "test" });
    addMasterKey = async () => `local:${await addLocalKeyVersion(path)}`;
    disableMasterKey = async (keyId) => disableLocalKeyVersion(path, Number(keyId.slice("local:".length)));
    pointAt = async (keyId) => {
      const restarted = await loadOrCreateLocalKeyring({ path, nodeEnv: "test" });
      if (restarted.currentKeyId() !== keyId)
        throw new Error(`the local keyring's current key is not ${keyId}`);
      return restarted;
    };
  }

  const keyring = countCalls(base, calls);
  const sourceKeyId = keyring.currentKeyId();
  const pepper = await loadOrCreatePepper(database.db, keyring);
  const fingerprintKey = deriveFingerprintKey(pepper);

  const replica = (with_: Keyring = keyring) =>
    createSecretService({
      db: database.db,
      prepared: database.prepared,
      userDataKeys: createUserDataKeys({
        keyring: with_,
        cache: createDataKeyCache({ maxAgeMs: 60_000, maxUses: 100_000, maxEntries: 1_000 }),
      }),
      fingerprintKey,
    });
  const writer = replica();
  const expiresAt = Math.floor(Date.now() / 1000) + 3600;
  const identity = (subject: string): UserIdentity => ({
    userRef: deriveUserRef(pepper, ISSUER, subject),
    expiresAt,
  });

  async function seedUser(index: number, secretsPerUser: number): Promise<SeededUser> {
    const user = identity(`auth0|rotation-user-${index}-${randomBytes(4).toString("hex")}`);
    const secrets = new Map<string, string>();
    for (let s = 0; s < secretsPerUser; s += 1) {
      let apiKey = `key-${index}-${s}-${randomBytes(12).toString("hex")}`;
      const created = await writer.put(
        user,
        parsePutSecret({
          secretId: "",
          provider: "binance",
          label: `label ${s}`,
          fields: { api_key: apiKey },
        }),
        signal,
      );
      if (s % 2 === 1) {
        // A second version, so rotation must re-seal old versions too.
        apiKey = `key-${index}-${s}-v2-${randomBytes(12).toString("hex")}`;
        await writer.put(
          user,
          parsePutSecret({
            secretId: created.id,
            provider: "binance",
            label: "",
            fields: { api_key: apiKey },
          }),
          signal,
        );
      }
      secrets.set(created.id, apiKey);
    }
    return { identity: user, secrets };
  }

  return {
    kind,
    keyring,
    calls,
    sourceKeyId,
    pepper: Buffer.from(pepper),
    kms,
    addMasterKey,
    disableMasterKey,
    pointAt,
    replica,
    identity,
    async seedUsers(count, secretsPerUser = 1) {
      const users: SeededUser[] = [];
      // Ten at a time: enough to overlap KMS round trips without flooding PGlite's one connection.
      for (let start = 0; start < count; start += 10) {
        const chunk = Array.from({ length: Math.min(10, count - start) }, (_, i) =>
          seedUser(start + i, secretsPerUser),
        );
        users.push(...(await Promise.all(chunk)));
      }
      return users;
    },
    async close() {
      pepper.fill(0);
      fingerprintKey.fill(0);
      client?.destroy();
      await kms?.close();
      if (dir !== undefined) await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Opens every seeded secret through `service` and returns the api_keys that did not match. */
export async function unreadableSecrets(
  service: SecretService,
  users: readonly SeededUser[],
): Promise<string[]> {
  const problems: string[] = [];
  for (const user of users) {
    for (const [id, apiKey] of user.secrets) {
      try {
        const opened = await service.open(user.identity, id, signal);
        const value = opened.fields.get("api_key")?.toString("utf8");
        for (const field of opened.fields.values()) field.fill(0);
        if (value !== apiKey) problems.push(`${id}: wrong value`);
      } catch (err) {
        problems.push(`${id}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }
  return problems;
}
