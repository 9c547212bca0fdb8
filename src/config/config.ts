import { fileURLToPath } from "node:url";
import { z } from "zod";
import { parseAcceptedMasterKeys } from "../keys/key-ids.js";
import { Redacted } from "../log/redacted.js";
import type { DatabaseConfig } from "../store/database.js";

/** Everything the broker reads from its environment, validated once at start-up and frozen. */
export interface Config {
  readonly production: boolean;
  readonly grpc: { readonly host: string; readonly port: number };
  /** Connect/gRPC-Web/gRPC over connect-node; undefined when disabled (port 0 means "any"). */
  readonly connect: { readonly host: string; readonly port: number } | undefined;
  /** TLS on the gRPC port; with a client CA bundle, mTLS that requires client certificates. */
  readonly grpcTls:
    | { readonly certFile: string; readonly keyFile: string; readonly clientCaFile?: string }
    | undefined;
  /** Metrics (/metrics), liveness (/livez) and readiness (/readyz), plain HTTP; undefined when off. */
  readonly ops: { readonly host: string; readonly port: number } | undefined;
  readonly database: DatabaseConfig;
  /**
   * Master keys whose wrapped data keys are accepted; anything else fails closed (M2).
   * Undefined: only the configured key (KEYBROKER_KMS_KEY_ID, resolved to its ARN, or the local
   * keyring's current version). A list must name the configured key too.
   */
  readonly acceptedMasterKeys: readonly string[] | undefined;
  /** Fail fast while the keyring is down (F6): consecutive failures to open, and for how long. */
  readonly keyringBreaker: { readonly failureThreshold: number; readonly openMs: number };
  readonly keyring:
    | {
        readonly kind: "aws-kms";
        readonly keyId: string;
        readonly region: string;
        readonly endpoint: string | undefined;
        readonly maxAttempts: number;
        /** Deadline of one KMS attempt; the caller's deadline bounds the whole call (F6). */
        readonly attemptTimeoutMs: number;
      }
    | { readonly kind: "local"; readonly file: string };
  readonly auth: {
    readonly issuer: string;
    readonly audience: string;
    readonly jwksUrl: string;
    readonly requiredPermission: string;
    readonly allowedAzp: string | undefined;
    readonly clockToleranceSec: number;
    /** Refuse tokens minted longer ago than this (by `iat`), whatever their `exp`. */
    readonly maxTokenAgeSec: number | undefined;
    readonly jwksCacheMaxAgeMs: number;
    readonly jwksCooldownMs: number;
    readonly jwksTimeoutMs: number;
    readonly tokenCacheMaxEntries: number;
  };
  readonly dataKeyCache: { readonly maxAgeMs: number; readonly maxUses: number; readonly maxEntries: number };
  /** The provider registry (JSON); defaults to the definitions shipped in providers/. */
  readonly providersFile: string;
  /** An extra CA bundle (PEM) to trust for upstream TLS, e.g. a corporate egress proxy's. */
  readonly outboundCaFile: string | undefined;
  readonly logLevel: string;
  readonly shutdownGraceMs: number;
}

/** providers/providers.json at the package root (from src/config/ or dist/src/config/). */
const SHIPPED_PROVIDERS_FILE = fileURLToPath(
  new URL(
    import.meta.url.includes("/dist/")
      ? "../../../providers/providers.json"
      : "../../providers/providers.json",
    import.meta.url,
  ),
);

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const port = int(0, 65535);
const url = z.url();

/** The schema doubles as the list of every variable the broker knows (see test/unit/config). */
export const envSchema = z.object({
  NODE_ENV: z.enum(["development", "test", "production"]).default("development"),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  KEYBROKER_GRPC_HOST: z.string().min(1).default("0.0.0.0"),
  KEYBROKER_GRPC_PORT: port.default(50051),
  KEYBROKER_CONNECT_HOST: z.string().min(1).optional(),
  /** Set to "off" to disable the Connect/gRPC-Web listener. */
  KEYBROKER_CONNECT_PORT: z.union([z.literal("off"), port]).default(8080),
  KEYBROKER_TLS_CERT_FILE: z.string().min(1).optional(),
  KEYBROKER_TLS_KEY_FILE: z.string().min(1).optional(),
  KEYBROKER_TLS_CLIENT_CA_FILE: z.string().min(1).optional(),
  /**
   * Comma-separated key ARNs and/or local:N: rows under any other master key fail closed.
   * Unset: only the configured master key. During a master-key rotation, list old and new.
   */
  KEYBROKER_ACCEPTED_MASTER_KEYS: z.string().min(1).optional(),
  KEYBROKER_METRICS_HOST: z.string().min(1).optional(),
  /** Set to "off" to disable the metrics and probes listener. */
  KEYBROKER_METRICS_PORT: z.union([z.literal("off"), port]).default(9464),
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, "must be a postgres:// URL")
    .optional(),
  KEYBROKER_DB_MAX_CONNECTIONS: int(1, 200).default(10),
  KEYBROKER_DB_CONNECT_TIMEOUT_MS: int(100, 60_000).default(2_000),
  KEYBROKER_DB_STATEMENT_TIMEOUT_MS: int(100, 600_000).default(10_000),
  KEYBROKER_PGLITE_DIR: z.string().min(1).optional(),
  KEYBROKER_KEYRING: z.enum(["aws-kms", "local"]),
  KEYBROKER_KMS_KEY_ID: z.string().min(1).optional(),
  KEYBROKER_KMS_ENDPOINT: url.optional(),
  KEYBROKER_KMS_MAX_ATTEMPTS: int(1, 10).default(3),
  /** One KMS attempt's deadline: short, so a hung KMS cannot hold a call for attempts × 5 s. */
  KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS: int(100, 30_000).default(2_000),
  /** Consecutive UNAVAILABLE keyring calls after which calls fail fast (per process). */
  KEYBROKER_KEYRING_BREAKER_FAILURES: int(1, 1_000).default(5),
  /** How long calls fail fast before one probe call is let through to the keyring. */
  KEYBROKER_KEYRING_BREAKER_OPEN_MS: int(100, 600_000).default(10_000),
  AWS_REGION: z.string().min(1).optional(),
  KEYBROKER_LOCAL_KEYRING_FILE: z.string().min(1).optional(),
  AUTH0_ISSUER: url,
  AUTH0_AUDIENCE: z.string().min(1),
  AUTH0_JWKS_URL: url.optional(),
  AUTH0_REQUIRED_PERMISSION: z.string().regex(/^\S+$/, "must be one permission, no spaces"),
  AUTH0_ALLOWED_AZP: z.string().min(1).optional(),
  AUTH0_CLOCK_TOLERANCE_SEC: int(0, 30).default(10),
  // Optional: a token older than this (by iat) is refused even before its exp (1 min .. 24 h).
  KEYBROKER_MAX_TOKEN_AGE_SEC: int(60, 86_400).optional(),
  KEYBROKER_JWKS_CACHE_MAX_AGE_MS: int(10_000, 86_400_000).default(600_000),
  KEYBROKER_JWKS_COOLDOWN_MS: int(1_000, 3_600_000).default(30_000),
  KEYBROKER_JWKS_TIMEOUT_MS: int(100, 30_000).default(5_000),
  KEYBROKER_TOKEN_CACHE_MAX_ENTRIES: int(0, 1_000_000).default(10_000),
  KEYBROKER_DATA_KEY_CACHE_MAX_AGE_MS: int(1_000, 3_600_000).default(300_000),
  KEYBROKER_DATA_KEY_CACHE_MAX_USES: int(1, 1_000_000).default(10_000),
  KEYBROKER_DATA_KEY_CACHE_MAX_ENTRIES: int(1, 1_000_000).default(10_000),
  KEYBROKER_PROVIDERS_FILE: z.string().min(1).optional(),
  KEYBROKER_OUTBOUND_CA_FILE: z.string().min(1).optional(),
  KEYBROKER_SHUTDOWN_GRACE_MS: int(0, 120_000).default(10_000),
});

export type KeybrokerEnv = z.input<typeof envSchema>;

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/**
 * Reads the configuration from an environment map. Every problem is reported at once;
 * messages name variables, never their values (DATABASE_URL may carry a password).
 */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`));
  }
  const e = parsed.data;
  const production = e.NODE_ENV === "production";
  const problems: string[] = [];

  const loopback = (u: string) => ["127.0.0.1", "localhost", "[::1]"].includes(new URL(u).hostname);
  if (new URL(e.AUTH0_ISSUER).protocol !== "https:" && (production || !loopback(e.AUTH0_ISSUER))) {
    problems.push(
      "AUTH0_ISSUER: must be https (http is allowed only for a loopback dev issuer outside production)",
    );
  }
  const jwksUrl = e.AUTH0_JWKS_URL ?? new URL(".well-known/jwks.json", e.AUTH0_ISSUER).toString();
  if (new URL(jwksUrl).protocol !== "https:" && (production || !loopback(jwksUrl))) {
    problems.push("AUTH0_JWKS_URL: must be https (http only for a loopback dev issuer outside production)");
  }

  let database: DatabaseConfig;
  if (e.DATABASE_URL !== undefined) {
    if (e.KEYBROKER_PGLITE_DIR !== undefined) {
      problems.push("KEYBROKER_PGLITE_DIR: set either DATABASE_URL or KEYBROKER_PGLITE_DIR, not both");
    }
    database = {
      kind: "postgres",
      url: new Redacted(e.DATABASE_URL),
      maxConnections: e.KEYBROKER_DB_MAX_CONNECTIONS,
      connectTimeoutMs: e.KEYBROKER_DB_CONNECT_TIMEOUT_MS,
      statementTimeoutMs: e.KEYBROKER_DB_STATEMENT_TIMEOUT_MS,
    };
  } else {
    if (production)
      problems.push("DATABASE_URL: required in production (the embedded PGlite is for development)");
    database = { kind: "pglite", dataDir: e.KEYBROKER_PGLITE_DIR };
  }

  let keyring: Config["keyring"];
  if (e.KEYBROKER_KEYRING === "aws-kms") {
    if (e.KEYBROKER_KMS_KEY_ID === undefined) problems.push("KEYBROKER_KMS_KEY_ID: required with aws-kms");
    if (e.AWS_REGION === undefined) problems.push("AWS_REGION: required with aws-kms");
    keyring = {
      kind: "aws-kms",
      keyId: e.KEYBROKER_KMS_KEY_ID ?? "",
      region: e.AWS_REGION ?? "",
      endpoint: e.KEYBROKER_KMS_ENDPOINT,
      maxAttempts: e.KEYBROKER_KMS_MAX_ATTEMPTS,
      attemptTimeoutMs: e.KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS,
    };
  } else {
    if (production) problems.push("KEYBROKER_KEYRING: the local keyring is development-only; use aws-kms");
    if (e.KEYBROKER_LOCAL_KEYRING_FILE === undefined) {
      problems.push("KEYBROKER_LOCAL_KEYRING_FILE: required with the local keyring");
    }
    keyring = { kind: "local", file: e.KEYBROKER_LOCAL_KEYRING_FILE ?? "" };
  }

  if ((e.KEYBROKER_TLS_CERT_FILE === undefined) !== (e.KEYBROKER_TLS_KEY_FILE === undefined)) {
    problems.push(
      "KEYBROKER_TLS_KEY_FILE: set both KEYBROKER_TLS_CERT_FILE and KEYBROKER_TLS_KEY_FILE, or neither",
    );
  }
  if (e.KEYBROKER_TLS_CLIENT_CA_FILE !== undefined && e.KEYBROKER_TLS_CERT_FILE === undefined) {
    problems.push(
      "KEYBROKER_TLS_CLIENT_CA_FILE: mTLS needs KEYBROKER_TLS_CERT_FILE and KEYBROKER_TLS_KEY_FILE",
    );
  }
  let acceptedMasterKeys: string[] | undefined;
  if (e.KEYBROKER_ACCEPTED_MASTER_KEYS !== undefined) {
    try {
      acceptedMasterKeys = parseAcceptedMasterKeys(e.KEYBROKER_ACCEPTED_MASTER_KEYS);
    } catch (err) {
      problems.push(`KEYBROKER_ACCEPTED_MASTER_KEYS: ${err instanceof Error ? err.message : "invalid"}`);
    }
  }

  if (problems.length > 0) throw new ConfigError(problems);

  return Object.freeze({
    production,
    grpc: { host: e.KEYBROKER_GRPC_HOST, port: e.KEYBROKER_GRPC_PORT },
    connect:
      e.KEYBROKER_CONNECT_PORT === "off"
        ? undefined
        : { host: e.KEYBROKER_CONNECT_HOST ?? e.KEYBROKER_GRPC_HOST, port: e.KEYBROKER_CONNECT_PORT },
    ops:
      e.KEYBROKER_METRICS_PORT === "off"
        ? undefined
        : { host: e.KEYBROKER_METRICS_HOST ?? e.KEYBROKER_GRPC_HOST, port: e.KEYBROKER_METRICS_PORT },
    grpcTls:
      e.KEYBROKER_TLS_CERT_FILE === undefined || e.KEYBROKER_TLS_KEY_FILE === undefined
        ? undefined
        : {
            certFile: e.KEYBROKER_TLS_CERT_FILE,
            keyFile: e.KEYBROKER_TLS_KEY_FILE,
            ...(e.KEYBROKER_TLS_CLIENT_CA_FILE === undefined
              ? {}
              : { clientCaFile: e.KEYBROKER_TLS_CLIENT_CA_FILE }),
          },
    acceptedMasterKeys,
    keyringBreaker: {
      failureThreshold: e.KEYBROKER_KEYRING_BREAKER_FAILURES,
      openMs: e.KEYBROKER_KEYRING_BREAKER_OPEN_MS,
    },
    database,
    keyring,
    auth: {
      issuer: e.AUTH0_ISSUER,
      audience: e.AUTH0_AUDIENCE,
      jwksUrl,
      requiredPermission: e.AUTH0_REQUIRED_PERMISSION,
      allowedAzp: e.AUTH0_ALLOWED_AZP,
      clockToleranceSec: e.AUTH0_CLOCK_TOLERANCE_SEC,
      maxTokenAgeSec: e.KEYBROKER_MAX_TOKEN_AGE_SEC,
      jwksCacheMaxAgeMs: e.KEYBROKER_JWKS_CACHE_MAX_AGE_MS,
      jwksCooldownMs: e.KEYBROKER_JWKS_COOLDOWN_MS,
      jwksTimeoutMs: e.KEYBROKER_JWKS_TIMEOUT_MS,
      tokenCacheMaxEntries: e.KEYBROKER_TOKEN_CACHE_MAX_ENTRIES,
    },
    dataKeyCache: {
      maxAgeMs: e.KEYBROKER_DATA_KEY_CACHE_MAX_AGE_MS,
      maxUses: e.KEYBROKER_DATA_KEY_CACHE_MAX_USES,
      maxEntries: e.KEYBROKER_DATA_KEY_CACHE_MAX_ENTRIES,
    },
    providersFile: e.KEYBROKER_PROVIDERS_FILE ?? SHIPPED_PROVIDERS_FILE,
    outboundCaFile: e.KEYBROKER_OUTBOUND_CA_FILE,
    logLevel: e.LOG_LEVEL,
    shutdownGraceMs: e.KEYBROKER_SHUTDOWN_GRACE_MS,
  });
}

/** Just the database part, for commands that touch nothing else (`migrate`, `caller-keys`). */
export function loadDatabaseConfig(env: Readonly<Record<string, string | undefined>>): DatabaseConfig {
  const parsed = envSchema
    .pick({
      NODE_ENV: true,
      DATABASE_URL: true,
      KEYBROKER_DB_MAX_CONNECTIONS: true,
      KEYBROKER_DB_CONNECT_TIMEOUT_MS: true,
      KEYBROKER_DB_STATEMENT_TIMEOUT_MS: true,
      KEYBROKER_PGLITE_DIR: true,
    })
    .safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`));
  }
  const e = parsed.data;
  if (e.DATABASE_URL !== undefined) {
    return {
      kind: "postgres",
      url: new Redacted(e.DATABASE_URL),
      maxConnections: e.KEYBROKER_DB_MAX_CONNECTIONS,
      connectTimeoutMs: e.KEYBROKER_DB_CONNECT_TIMEOUT_MS,
      statementTimeoutMs: e.KEYBROKER_DB_STATEMENT_TIMEOUT_MS,
    };
  }
  if (e.NODE_ENV === "production") throw new ConfigError(["DATABASE_URL: required in production"]);
  return { kind: "pglite", dataDir: e.KEYBROKER_PGLITE_DIR };
}
