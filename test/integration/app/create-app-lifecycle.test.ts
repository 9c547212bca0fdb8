import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PGlite } from "@electric-sql/pglite";
import { afterEach, beforeEach, describe, expect, inject, it, vi } from "vitest";
import { createApp } from "../../../src/app/create-app.js";
import type { ConfiguredKeyring } from "../../../src/app/keyring-from-config.js";
import { verifyAgainstCheckpoint } from "../../../src/audit/audit-checkpoint-verify.js";
import { createAuditLog } from "../../../src/audit/audit-log.js";
import { loadConfig } from "../../../src/config/config.js";
import { openLocalMacKey } from "../../../src/keys/local-mac-key.js";
import type { DatabaseHandle } from "../../../src/store/database.js";
import { captureLogs } from "../../support/captured-logs.js";
import { startLocalKmsServer } from "../../support/local-kms-server.js";

// Every database createApp opens, and whether it was closed: the handle is otherwise lost
// when createApp throws, so this is the only way to see what a failed start left open.
const opened = vi.hoisted(() => [] as Array<{ closed: boolean }>);
vi.mock("../../../src/store/database.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../../src/store/database.js")>();
  return {
    ...real,
    async openDatabase(...args: Parameters<typeof real.openDatabase>): Promise<DatabaseHandle> {
      const handle = await real.openDatabase(...args);
      const record = { closed: false };
      opened.push(record);
      return {
        ...handle,
        async close() {
          await handle.close();
          record.closed = true;
        },
      };
    },
  };
});

// The same for the configured keyring, whose close releases the AWS KMS client's sockets.
const keyrings = vi.hoisted(() => [] as Array<{ closed: boolean }>);
vi.mock("../../../src/app/keyring-from-config.js", async (importOriginal) => {
  const real = await importOriginal<typeof import("../../../src/app/keyring-from-config.js")>();
  return {
    ...real,
    async openKeyringFromConfig(
      ...args: Parameters<typeof real.openKeyringFromConfig>
    ): Promise<ConfiguredKeyring> {
      const configured = await real.openKeyringFromConfig(...args);
      const record = { closed: false };
      keyrings.push(record);
      return {
        ...configured,
        close() {
          configured.close();
          record.closed = true;
        },
      };
    },
  };
});

function listenOn(port: number): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

async function freePort(): Promise<number> {
  const server = await listenOn(0);
  const address = server.address();
  await closeServer(server);
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

describe("createApp's lifecycle", () => {
  let dir: string;
  let env: Record<string, string>;

  beforeEach(async () => {
    opened.length = 0;
    keyrings.length = 0;
    dir = await mkdtemp(join(tmpdir(), "keybroker-app-lifecycle-"));
    // A migrated data directory from the suite's template: createApp runs with migrate: false.
    const template = await readFile(inject("pgliteTemplate"));
    const pglite = await PGlite.create({ dataDir: join(dir, "pglite"), loadDataDir: new Blob([template]) });
    await pglite.close();
    env = {
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
      KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      KEYBROKER_PROCESS_METRICS: "off",
      LOG_LEVEL: "silent",
      KEYBROKER_GRPC_HOST: "127.0.0.1",
      KEYBROKER_GRPC_PORT: "0",
      KEYBROKER_CONNECT_PORT: "off",
      KEYBROKER_ADMIN_GRPC_PORT: "off",
      KEYBROKER_METRICS_PORT: "off",
      KEYBROKER_PGLITE_DIR: join(dir, "pglite"),
      KEYBROKER_KEYRING: "local",
      KEYBROKER_LOCAL_KEYRING_FILE: join(dir, "keyring.json"),
      AUTH0_ISSUER: "https://tenant.example.auth0.com/",
      AUTH0_AUDIENCE: "keybroker",
      AUTH0_REQUIRED_PERMISSION: "use:secrets",
    };
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("closes the database and the keyring it opened when a later step fails (a providers file that does not parse)", async () => {
    const providersFile = join(dir, "providers.json");
    await writeFile(providersFile, "{ not json");
    const config = loadConfig({ ...env, KEYBROKER_PROVIDERS_FILE: providersFile });

    await expect(createApp(config, captureLogs().logger, { migrate: false })).rejects.toThrow();

    expect(opened).toEqual([{ closed: true }]);
    expect(keyrings).toEqual([{ closed: true }]);
  });

  it("closes the database and the keyring and releases the ports already bound when a port is busy at start", async () => {
    const busy = await listenOn(0);
    const busyAddress = busy.address();
    if (busyAddress === null || typeof busyAddress === "string") throw new Error("no port");
    const opsPort = await freePort();
    try {
      const config = loadConfig({
        ...env,
        KEYBROKER_GRPC_PORT: String(busyAddress.port),
        KEYBROKER_METRICS_PORT: String(opsPort),
      });
      const app = await createApp(config, captureLogs().logger, { migrate: false });

      await expect(app.start()).rejects.toThrow();

      expect(opened).toEqual([{ closed: true }]);
      expect(keyrings).toEqual([{ closed: true }]);
      // The ops port bound before the gRPC port failed: it is free again.
      await closeServer(await listenOn(opsPort));
      // Stopping after a failed start is harmless.
      await expect(app.stop()).resolves.toBeUndefined();
    } finally {
      await closeServer(busy);
    }
  });

  it("closes the database and the keyring on stop; stopping again, even concurrently, is harmless", async () => {
    const config = loadConfig(env);
    const app = await createApp(config, captureLogs().logger, { migrate: false });
    await app.start();
    expect(opened).toEqual([{ closed: false }]);
    expect(keyrings).toEqual([{ closed: false }]);

    await Promise.all([app.stop(), app.stop()]);
    await app.stop();

    expect(opened).toEqual([{ closed: true }]);
    expect(keyrings).toEqual([{ closed: true }]);
  });

  it("leaves a database the caller passed in open, on a failed start as on stop", async () => {
    const providersFile = join(dir, "providers.json");
    await writeFile(providersFile, "{ not json");
    const { openDatabase } = await import("../../../src/store/database.js");
    const database = await openDatabase(
      { kind: "pglite", dataDir: join(dir, "pglite") },
      captureLogs().logger,
    );
    try {
      const config = loadConfig({ ...env, KEYBROKER_PROVIDERS_FILE: providersFile });

      await expect(
        createApp(config, captureLogs().logger, { migrate: false, overrides: { database } }),
      ).rejects.toThrow();

      expect(opened).toEqual([{ closed: false }]);
      await expect(database.db.selectFrom("users").select("user_ref").execute()).resolves.toBeDefined();
    } finally {
      await database.close();
    }
  });

  it("G59 signs a last checkpoint covering every row of the trail when it stops", async () => {
    const { openDatabase } = await import("../../../src/store/database.js");
    const database = await openDatabase(
      { kind: "pglite", dataDir: join(dir, "pglite") },
      captureLogs().logger,
    );
    const macKey = await openLocalMacKey(join(dir, "keyring.json"));
    try {
      const log = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
      for (let i = 0; i < 3; i++)
        await log.record({ requestId: `r-${i}`, action: "secret.list", outcome: "ok" });
      await log.close();
      const app = await createApp(loadConfig(env), captureLogs().logger, {
        migrate: false,
        overrides: { database },
      });
      await app.start();

      await app.stop();

      expect(await verifyAgainstCheckpoint(database.db, macKey)).toMatchObject({
        status: "covered",
        checkpointSeq: 3,
        uncoveredRows: 0,
      });
    } finally {
      macKey.close();
      await database.close();
    }
  });

  it("G59 refuses to start with a checkpoint key that cannot make MACs, and closes what it opened", async () => {
    const kms = await startLocalKmsServer();
    process.env.AWS_ACCESS_KEY_ID ??= "test";
    process.env.AWS_SECRET_ACCESS_KEY ??= "test";
    try {
      const masterKey = kms.createKey("master");
      const config = loadConfig({
        ...env,
        KEYBROKER_KEYRING: "aws-kms",
        KEYBROKER_KMS_KEY_ID: masterKey,
        KEYBROKER_KMS_ENDPOINT: kms.endpoint,
        AWS_REGION: kms.region,
        // A symmetric encryption key: KMS refuses GenerateMac with it.
        KEYBROKER_AUDIT_CHECKPOINT_KEY_ID: masterKey,
      });

      await expect(createApp(config, captureLogs().logger, { migrate: false })).rejects.toThrow(
        /master key is not usable/,
      );

      expect(kms.callCount("GenerateMac")).toBe(1);
      expect(opened).toEqual([{ closed: true }]);
      expect(keyrings).toEqual([{ closed: true }]);
    } finally {
      await kms.close();
    }
  });
});
