import { mkdir } from "node:fs/promises";
import { createCallerKeyAdmin } from "../admin/caller-key-admin.js";
import { createApp } from "../app/create-app.js";
import { loadOrCreateDevIssuerKey, startDevIssuer } from "../auth/dev-issuer.js";
import { loadConfig, relaxationWarnings } from "../config/config.js";
import { createLogger } from "../log/logger.js";
import type { CliIo } from "./cli-io.js";
import {
  DEV_AUDIENCE,
  DEV_DIR,
  DEV_PERMISSION,
  devPath,
  refuseProduction,
  writeDevState,
} from "./dev-environment.js";
import { stopOnSignals } from "./shutdown-signals.js";

const DEV_KEY_NAME = "dev";

/**
 * `npm start`: the broker with embedded DEV-ONLY defaults — PGlite in .keybroker-dev/,
 * the local file keyring, and a loopback token issuer whose JWKS is served over HTTP so
 * the production jose code path runs unchanged. Refuses NODE_ENV=production.
 */
export async function runDev(_args: string[], io: CliIo): Promise<number> {
  refuseProduction("keybroker dev", io.env);
  await mkdir(DEV_DIR, { recursive: true, mode: 0o700 });
  const issuerKey = await loadOrCreateDevIssuerKey(devPath("issuer-key.json"));
  const issuer = await startDevIssuer({
    host: "127.0.0.1",
    port: Number(io.env.KEYBROKER_DEV_ISSUER_PORT ?? 4455),
    key: issuerKey,
  });

  // The one relaxed mode: every production guard is off here, and each is named in the log.
  const config = loadConfig(
    {
      LOG_LEVEL: "info",
      KEYBROKER_GRPC_HOST: "127.0.0.1",
      KEYBROKER_PGLITE_DIR: devPath("pgdata"),
      KEYBROKER_KEYRING: "local",
      KEYBROKER_LOCAL_KEYRING_FILE: devPath("keyring.json"),
      AUTH0_ISSUER: issuer.issuer,
      AUTH0_AUDIENCE: DEV_AUDIENCE,
      AUTH0_JWKS_URL: issuer.jwksUrl,
      AUTH0_REQUIRED_PERMISSION: DEV_PERMISSION,
      // Ports and log level may still be overridden from the environment.
      ...pick(io.env, [
        "KEYBROKER_GRPC_PORT",
        "KEYBROKER_CONNECT_PORT",
        "KEYBROKER_ADMIN_GRPC_PORT",
        "LOG_LEVEL",
      ]),
    },
    { mode: "development" },
  );
  const logger = createLogger({ level: config.logLevel });
  for (const warning of relaxationWarnings(config)) logger.warn(warning);
  const app = await createApp(config, logger, { migrate: true });

  // A fresh dev caller key each start (the previous one is revoked): it is printed once, below.
  const admin = createCallerKeyAdmin({ db: app.database.db });
  for (const key of await admin.list()) {
    if (key.name === DEV_KEY_NAME && key.revokedAt === null) await admin.revoke(key.id);
  }
  const devKey = await admin.create({
    name: DEV_KEY_NAME,
    scopes: ["secrets:read", "secrets:write", "proxy:call"],
    expiresAt: null,
  });

  const { grpcPort, connectPort, adminPort } = await app.start();
  await writeDevState({
    issuer: issuer.issuer,
    audience: DEV_AUDIENCE,
    permission: DEV_PERMISSION,
    grpcPort,
    connectPort,
  });
  io.stdout.write(banner(devKey.key, { grpcPort, connectPort, adminPort }));

  await stopOnSignals(async () => {
    await app.stop();
    await issuer.close();
  }, logger);
  return 0;
}

function pick(env: CliIo["env"], names: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of names) {
    const value = env[name];
    if (value !== undefined) out[name] = value;
  }
  return out;
}

function banner(
  callerKey: string,
  ports: { grpcPort: number; connectPort: number | undefined; adminPort: number | undefined },
): string {
  const { grpcPort, connectPort, adminPort } = ports;
  const line = "=".repeat(78);
  return `
${line}
  KEYBROKER DEV MODE — DEVELOPMENT ONLY. Local file keyring, embedded PGlite and a
  loopback token issuer: none of this is safe for real keys. Production: keybroker serve.
${line}
  gRPC            127.0.0.1:${grpcPort}   (grpc.health.v1 and reflection enabled)
  Connect/gRPC-Web ${connectPort === undefined ? "disabled" : `http://127.0.0.1:${connectPort}`}
  AdminService    ${adminPort === undefined ? "disabled" : `127.0.0.1:${adminPort}   (its own listener; admin keys: keybroker caller-keys)`}
  Dev caller key  ${callerKey}
                  (shown once; a new one is issued at every dev start)

  Get a user token:   npm run -s keybroker -- dev-token --sub alice
  First call:
    KEY=${callerKey}
    TOKEN=$(npm run -s keybroker -- dev-token --sub alice)
    npx buf curl --protocol grpc --http2-prior-knowledge \\
      -H "x-keybroker-key: $KEY" -H "authorization: Bearer $TOKEN" \\
      -d '{"provider":"github","label":"my token","fields":{"token":"ghp_example"}}' \\
      http://127.0.0.1:${grpcPort}/keybroker.v1.SecretService/PutSecret
${line}
`;
}
