import { isLoopbackHost } from "../config/config.js";
import type { CliIo } from "./cli-io.js";
import { DEV_AUDIENCE, DEV_PERMISSION, devPath } from "./dev-environment.js";

type Env = CliIo["env"];

/**
 * What dev mode decides itself, whatever the environment says: its own embedded database,
 * local keyring and token issuer (dev-token and the banner depend on them). A variable set to
 * something else is ignored with a warning, never silently: DATABASE_URL in a developer's shell
 * is usually their app's database, which dev mode must not migrate.
 */
const DECIDED_BY_DEV = [
  "DATABASE_URL",
  "KEYBROKER_PGLITE_DIR",
  "KEYBROKER_KEYRING",
  "KEYBROKER_KMS_KEY_ID",
  "KEYBROKER_LOCAL_KEYRING_FILE",
  "KEYBROKER_AUDIT_CHECKPOINT_KEY_ID",
  "AUTH0_ISSUER",
  "AUTH0_AUDIENCE",
  "AUTH0_JWKS_URL",
  "AUTH0_REQUIRED_PERMISSION",
  "AUTH0_ALLOWED_AZP",
] as const;

// Dev mode's broker accepts tokens anyone on this host can mint: it binds loopback only.
const HOST_VARIABLES = [
  "KEYBROKER_GRPC_HOST",
  "KEYBROKER_CONNECT_HOST",
  "KEYBROKER_ADMIN_GRPC_HOST",
  "KEYBROKER_METRICS_HOST",
] as const;

export interface DevConfigEnv {
  /** The environment `loadConfig(..., { mode: "development" })` reads. */
  readonly env: Record<string, string | undefined>;
  /** One warning per variable dev mode decides itself and the environment set. */
  readonly ignored: readonly string[];
  /** A host variable off loopback: dev mode refuses to start. */
  readonly problems: readonly string[];
}

/**
 * The broker's environment in dev mode: the process's own (ports, metrics, outbound CA, limits,
 * DPoP... as for `serve`), with the embedded database, the local keyring, the dev issuer and the
 * merged provider registry (the `dev-echo` entry added to KEYBROKER_PROVIDERS_FILE or the
 * shipped one) put in place.
 */
export function devConfigEnv(
  env: Env,
  dev: { readonly issuer: string; readonly jwksUrl: string; readonly providersFile: string },
): DevConfigEnv {
  const ignored = DECIDED_BY_DEV.filter((name) => env[name] !== undefined).map(
    (name) =>
      `keybroker dev ignores ${name}: dev mode uses its own (embedded database, local keyring, dev issuer in ${devPath(env, "")})`,
  );
  const problems = HOST_VARIABLES.filter((name) => {
    const host = env[name];
    return host !== undefined && !isLoopbackHost(host);
  }).map(
    (name) =>
      `${name}: keybroker dev binds loopback only (its tokens are mintable by anyone on this host); use keybroker serve`,
  );
  const passed: Record<string, string | undefined> = { ...env };
  for (const name of DECIDED_BY_DEV) delete passed[name];
  return {
    env: {
      LOG_LEVEL: "info",
      ...passed,
      KEYBROKER_PGLITE_DIR: devPath(env, "pgdata"),
      KEYBROKER_KEYRING: "local",
      KEYBROKER_LOCAL_KEYRING_FILE: devPath(env, "keyring.json"),
      AUTH0_ISSUER: dev.issuer,
      AUTH0_AUDIENCE: DEV_AUDIENCE,
      AUTH0_JWKS_URL: dev.jwksUrl,
      AUTH0_REQUIRED_PERMISSION: DEV_PERMISSION,
      KEYBROKER_PROVIDERS_FILE: dev.providersFile,
    },
    ignored,
    problems,
  };
}
