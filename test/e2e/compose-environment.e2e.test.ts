import { type ChildProcess, execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config/config.js";
import { createGrpcClients, unary, type WireMessage } from "../support/grpc-client.js";
import { createTestCertificates } from "../support/https-upstream.js";
import { type LocalKmsServer, startLocalKmsServer } from "../support/local-kms-server.js";
import { POSTGRES_SKIP_REASON } from "../support/skip-reasons.js";
import { startTestIssuer, type TestIssuer } from "../support/test-issuer.js";
import { composeConfig, composeService, environmentOf, repoPath } from "../unit/deploy/deploy-files.js";

const run = promisify(execFile);
const BIN = repoPath("bin/keybroker.js");

/**
 * Issue 5: the broker starts with EXACTLY the docker-compose broker service's environment,
 * except the values that name compose hosts, which point at local equivalents: a real
 * Postgres, the local KMS-protocol server (for local-kms) and an https JWKS issuer with a
 * throwaway CA (for the mock OIDC server behind its TLS edge). It then serves a call.
 * Needs a Postgres server (production refuses PGlite), so it runs when TEST_DATABASE_URL is set.
 */
const HOST_BOUND = [
  "DATABASE_URL",
  "KEYBROKER_KMS_ENDPOINT",
  "AUTH0_ISSUER",
  "AUTH0_JWKS_URL",
  "NODE_EXTRA_CA_CERTS",
  "KEYBROKER_GRPC_HOST",
  "KEYBROKER_GRPC_PORT",
  "KEYBROKER_CONNECT_PORT",
  "KEYBROKER_METRICS_PORT",
  "KEYBROKER_ADMIN_GRPC_PORT",
];

describe("docker-compose's broker environment", () => {
  it("is a production configuration that refuses to fall back to the embedded PGlite", () => {
    const compose = environmentOf(composeService(composeConfig("docker-compose.yml"), "broker"));
    expect(() => loadConfig({ ...compose, DATABASE_URL: undefined })).toThrow(/DATABASE_URL/);
    expect(loadConfig(compose).production).toBe(true);
  });
});

const adminUrl = process.env.TEST_DATABASE_URL ?? "";
// Registered either way, so a run without Postgres reports these as skipped (catalogue W6).
describe.skipIf(adminUrl === "")(
  `the broker with docker-compose's environment${adminUrl === "" ? ` (${POSTGRES_SKIP_REASON})` : ""}`,
  () => {
    const compose = environmentOf(composeService(composeConfig("docker-compose.yml"), "broker"));
    const dbName = `keybroker_compose_${randomBytes(4).toString("hex")}`;
    // As compose's Postgres init hook makes keybroker_runtime; random, since roles are server-wide.
    const runtimeRole = `kb_compose_rt_${randomBytes(4).toString("hex")}`;
    let dir: string;
    let kms: LocalKmsServer;
    let issuer: TestIssuer;
    let jwks: Server;
    let env: Record<string, string>;
    let child: ChildProcess;
    let output = "";

    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "keybroker-compose-"));
      const admin = new pg.Client({ connectionString: adminUrl });
      await admin.connect();
      await admin.query(`create database ${dbName}`);
      await admin.query(`create role ${runtimeRole} login`);
      await admin.end();
      const ownerUrl = new URL(adminUrl);
      ownerUrl.pathname = `/${dbName}`;
      const dbUrl = new URL(ownerUrl);
      dbUrl.username = runtimeRole;

      kms = await startLocalKmsServer({ region: compose.AWS_REGION ?? "us-east-1" });
      kms.createAlias(compose.KEYBROKER_KMS_KEY_ID ?? "", kms.createKey("compose"));
      kms.createAlias(
        compose.KEYBROKER_AUDIT_CHECKPOINT_KEY_ID ?? "",
        kms.createKey("compose checkpoints", "HMAC_256"),
      );

      issuer = await startTestIssuer({
        audience: compose.AUTH0_AUDIENCE ?? "",
        permission: compose.AUTH0_REQUIRED_PERMISSION ?? "",
      });
      const certs = createTestCertificates();
      const caFile = join(dir, "ca.pem");
      await writeFile(caFile, certs.ca);
      // The https stand-in for the mock issuer: serves the test issuer's JWKS over TLS.
      jwks = createServer({ key: certs.key, cert: certs.cert }, (_req, res) => {
        fetch(issuer.jwksUrl)
          .then(async (r) => {
            res.writeHead(r.status, { "content-type": "application/json" });
            res.end(await r.text());
          })
          .catch(() => res.writeHead(502).end());
      });
      await new Promise<void>((resolve) => jwks.listen(0, "127.0.0.1", resolve));
      const port = (jwks.address() as { port: number }).port;

      env = {
        ...compose,
        DATABASE_URL: dbUrl.toString(),
        KEYBROKER_KMS_ENDPOINT: kms.endpoint,
        AUTH0_ISSUER: `https://127.0.0.1:${port}/keybroker`,
        AUTH0_JWKS_URL: `https://127.0.0.1:${port}/keybroker/jwks`,
        NODE_EXTRA_CA_CERTS: caFile,
        KEYBROKER_GRPC_HOST: "127.0.0.1",
        KEYBROKER_GRPC_PORT: "0",
        KEYBROKER_CONNECT_PORT: "0",
        KEYBROKER_METRICS_PORT: "0",
        KEYBROKER_ADMIN_GRPC_PORT: "0",
      };
      const childEnv = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", TZ: "UTC", ...env };
      // As compose's migrate service: the owner, granting the runtime role the broker serves as.
      const migrateEnv = environmentOf(composeService(composeConfig("docker-compose.yml"), "migrate"));
      await run(process.execPath, [BIN, "migrate"], {
        env: {
          ...childEnv,
          DATABASE_URL: ownerUrl.toString(),
          KEYBROKER_RUNTIME_DB_ROLE: migrateEnv.KEYBROKER_RUNTIME_DB_ROLE ? runtimeRole : "",
        },
      });
      child = spawn(process.execPath, [BIN, "serve"], { env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
      child.stdout?.on("data", (c: Buffer) => {
        output += c.toString();
      });
      child.stderr?.on("data", (c: Buffer) => {
        output += c.toString();
      });
      const deadline = Date.now() + 60_000;
      while (!output.includes('"msg":"keybroker serving"')) {
        if (Date.now() > deadline || child.exitCode !== null)
          throw new Error(`broker did not start:\n${output}`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }, 90_000);

    afterAll(async () => {
      if (child !== undefined && child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
      await Promise.all([kms?.close(), issuer?.close(), new Promise((resolve) => jwks?.close(resolve))]);
      const admin = new pg.Client({ connectionString: adminUrl });
      await admin.connect();
      await admin.query(`drop database if exists ${dbName} with (force)`);
      await admin.query(`drop role if exists ${runtimeRole}`);
      await admin.end();
      await rm(dir, { recursive: true, force: true });
    });

    it("changes only the host-bound variables of the compose service", () => {
      const changed = Object.keys(env).filter((k) => env[k] !== compose[k]);
      expect(changed.filter((k) => !HOST_BOUND.includes(k))).toEqual([]);
      expect(Object.keys(compose).filter((k) => env[k] !== compose[k] && !HOST_BOUND.includes(k))).toEqual(
        [],
      );
      expect(env.NODE_ENV).toBe("production");
      expect(env.KEYBROKER_KEYRING).toBe("aws-kms");
    });

    it("serves PutSecret and ListSecrets to a grpc-js client with a caller key made by the CLI", async () => {
      const childEnv = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env };
      const { stdout } = await run(
        process.execPath,
        [BIN, "caller-keys", "create", "--name", "main-app", "--scopes", "secrets:read,secrets:write"],
        { env: childEnv },
      );
      const callerKey = stdout.split("\n")[0] ?? "";
      expect(callerKey).toMatch(/^kbk_/);
      const grpcPort = Number(/"grpcPort":(\d+)/.exec(output)?.[1]);
      const clients = createGrpcClients(`127.0.0.1:${grpcPort}`);
      try {
        const bearerToken = await issuer.sign({ iss: env.AUTH0_ISSUER ?? "", sub: "auth0|compose-user" });
        const put = await unary(
          clients.secrets,
          "PutSecret",
          // Kraken declares no key inspection, so storing needs no network (issue 13 item 5).
          {
            provider: "kraken",
            label: "compose",
            fields: { api_key: "compose_environment_key_0001", api_secret: "compose_environment_secret" },
          },
          { callerKey, bearerToken },
        );
        expect((put.response.secret as WireMessage).provider).toBe("kraken");
        const list = await unary(clients.secrets, "ListSecrets", {}, { callerKey, bearerToken });
        expect(list.response.secrets).toHaveLength(1);
      } finally {
        clients.close();
      }
    });

    it("stops cleanly on SIGTERM", async () => {
      const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      expect(await exited).toBe(0);
    });
  },
);
