import { fileURLToPath } from "node:url";
import { z } from "zod";
import { parseAcceptedMasterKeys } from "../keys/key-ids.js";
import { Redacted } from "../log/redacted.js";
import type { TracingSettings } from "../observability/tracing-sdk.js";
import { isMisuseSignalName, MISUSE_SIGNALS, type MisuseSignalName } from "../signals/signal-event.js";
import type { DatabaseConfig } from "../store/database.js";
import { type OAuthConfig, oauthEnvSchema, parseOAuthConfig } from "./oauth-config.js";
import { parseTracing, tracingEnvShape } from "./tracing-config.js";

/**
 * A production guard switched off by its own variable (review L7). `keybroker serve` applies every
 * guard unless one is named here; `keybroker dev` switches all of them off. NODE_ENV switches none.
 */
export type Relaxation =
  | "http_issuer"
  | "loopback_providers"
  | "local_keyring"
  | "embedded_database"
  | "http_alert_webhook";

/** The variable that switches each relaxation on, and what it lets through (for the start-up warning). */
export const RELAXATIONS: {
  readonly [R in Relaxation]: { readonly variable: string; readonly allows: string };
} = {
  http_issuer: {
    variable: "KEYBROKER_ALLOW_HTTP_ISSUER",
    allows: "a plain-http token issuer and JWKS URL on loopback",
  },
  loopback_providers: {
    variable: "KEYBROKER_ALLOW_LOOPBACK_PROVIDERS",
    allows: "providers marked allowLoopback, plain-http and IP-literal provider hosts",
  },
  local_keyring: {
    variable: "KEYBROKER_ALLOW_LOCAL_KEYRING",
    allows: "the local file keyring instead of AWS KMS",
  },
  embedded_database: {
    variable: "KEYBROKER_ALLOW_EMBEDDED_DATABASE",
    allows: "the embedded PGlite database instead of DATABASE_URL",
  },
  http_alert_webhook: {
    variable: "KEYBROKER_ALLOW_HTTP_ALERT_WEBHOOK",
    allows: "a plain-http alert webhook URL on loopback",
  },
};

/**
 * The key that signs audit checkpoints (M1), kept where the database cannot reach it: an HMAC KMS
 * key, or in development a key derived from the local keyring file.
 */
export type AuditCheckpointKeyConfig =
  | {
      readonly kind: "aws-kms";
      readonly keyId: string;
      readonly region: string;
      readonly endpoint: string | undefined;
      readonly maxAttempts: number;
      readonly attemptTimeoutMs: number;
    }
  | { readonly kind: "local"; readonly file: string };

/** PEM files of one listener's TLS; a client CA bundle makes it mTLS. */
export interface ServerTlsConfig {
  readonly certFile: string;
  readonly keyFile: string;
  readonly clientCaFile?: string;
}

/** Per-listener connection limits (review L5). */
export interface ListenerLimitsConfig {
  /** Open connections at once; a connection past the cap is closed as it arrives. */
  readonly maxConnections: number;
  /** HTTP/2 streams (calls) at once on one connection. */
  readonly maxConcurrentStreams: number;
  /** A connection with no call for this long is closed (GOAWAY). */
  readonly idleTimeoutMs: number;
  /** The TLS handshake (or, in plaintext, the HTTP/2 preface) must complete within this. */
  readonly handshakeTimeoutMs: number;
}

/** Everything the broker reads from its environment, validated once at start-up and frozen. */
export interface Config {
  /** False only for `keybroker dev`; a production guard is off only if `relaxations` names it. */
  readonly production: boolean;
  /** The production guards switched off, each by its own variable (or all of them by dev mode). */
  readonly relaxations: readonly Relaxation[];
  /** Export process_* and nodejs_* metrics (off for in-process test brokers). */
  readonly processMetrics: boolean;
  /** OpenTelemetry tracing (OTEL_TRACES_EXPORTER=otlp); undefined, the default, when off. */
  readonly tracing: TracingSettings | undefined;
  /** The build's git commit, for the `keybroker_build_info` metric; "unknown" when not set. */
  readonly gitCommit: string;
  readonly grpc: { readonly host: string; readonly port: number };
  /** Connect/gRPC-Web/gRPC over connect-node; undefined when disabled (port 0 means "any"). */
  readonly connect: { readonly host: string; readonly port: number } | undefined;
  /**
   * TLS on the app ports (gRPC and Connect); with a client CA bundle, mTLS that requires client
   * certificates. Undefined: plaintext, which production allows off loopback only with
   * `plaintextListeners` (M3).
   */
  readonly grpcTls: ServerTlsConfig | undefined;
  /** The `mesh-mtls` opt-out: a sidecar terminates mTLS in front of the plaintext app ports (M3). */
  readonly plaintextListeners: "mesh-mtls" | undefined;
  /** AdminService's own gRPC listener, loopback by default (L6); undefined when disabled. */
  readonly admin:
    | { readonly host: string; readonly port: number; readonly tls: ServerTlsConfig | undefined }
    | undefined;
  /** Connection limits of every RPC listener (L5). */
  readonly listenerLimits: ListenerLimitsConfig;
  /** Largest request message; undefined: derived from the largest provider request body (F3). */
  readonly maxReceiveMessageBytes: number | undefined;
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
    /** An extra CA bundle (PEM) to trust for the issuer's JWKS over https, e.g. a private CA's. */
    readonly issuerCaFile: string | undefined;
    readonly requiredPermission: string;
    readonly allowedAzp: string | undefined;
    readonly clockToleranceSec: number;
    /** Refuse tokens minted longer ago than this (by `iat`), whatever their `exp`. */
    readonly maxTokenAgeSec: number | undefined;
    readonly jwksCacheMaxAgeMs: number;
    readonly jwksCooldownMs: number;
    readonly jwksTimeoutMs: number;
    readonly tokenCacheMaxEntries: number;
    /** DPoP (RFC 9449, issue 14); undefined: no origin configured, DPoP-bound tokens refused. */
    readonly dpop:
      | {
          /** Refuse every access token that is not DPoP-bound (`cnf.jkt`). */
          readonly required: boolean;
          /** The origin of the canonical `htu`: `<origin>/<package.Service>/<Method>`. */
          readonly htuOrigin: string;
          readonly maxAgeSec: number;
          readonly clockSkewSec: number;
        }
      | undefined;
  };
  readonly dataKeyCache: {
    readonly maxAgeMs: number;
    readonly maxUses: number;
    readonly maxEntries: number;
    /** A key unused for this long leaves memory (issue 14). */
    readonly idleMs: number;
  };
  /** Logout (issue 14). */
  readonly sessions: {
    /** The app client ids a logout token may be addressed to; undefined: logout tokens refused. */
    readonly logoutAudiences: readonly string[] | undefined;
    readonly logoutTokenMaxAgeSec: number;
    /** User calls fail closed once the replica's logout view is this old (lost LISTEN connection). */
    readonly revocationMaxStalenessMs: number;
  };
  /** Optional user PINs (issue 14 item 4): wrong-guess limits and the scrypt cost. */
  readonly pin: {
    readonly maxAttempts: number;
    readonly backoffMs: number;
    readonly lockoutMs: number;
    /** scrypt N = 2^scryptLogN (r = 8, p = 1). */
    readonly scryptLogN: number;
  };
  /** Proxied calls in flight at once, per secret and per caller key, on this replica (L8). */
  readonly proxyConcurrency: {
    readonly perSecret: number;
    /** Calls that may wait for one of the secret's slots before RESOURCE_EXHAUSTED. */
    readonly perSecretQueued: number;
    readonly perCaller: number;
  };
  /** Calls per minute, for providers that declare no `rateLimits` of their own; undefined: none. */
  readonly rateLimitDefaults: {
    readonly perSecretPerMinute: number | undefined;
    readonly perCallerKeyPerMinute: number | undefined;
  };
  /** The provider registry (JSON); defaults to the definitions shipped in providers/. */
  readonly providersFile: string;
  /** OAuth connections (issue 15); undefined when the public callback listener is off. */
  readonly oauth: OAuthConfig | undefined;
  /**
   * Providers whose keys with dangerous permissions (inspection) are stored with a warning
   * instead of refused (KEYBROKER_INSPECTION_RELAX); checked against the registry at start-up.
   */
  readonly inspectionRelaxed: readonly string[];
  /** An extra CA bundle (PEM) to trust for upstream TLS, e.g. a corporate egress proxy's. */
  readonly outboundCaFile: string | undefined;
  readonly logLevel: string;
  readonly shutdownGraceMs: number;
  /** How often refusals without a valid caller key are written to the trail as one summary row. */
  readonly authFailureSummaryIntervalMs: number;
  /** Signed checkpoints of the audit chain (M1); `key` undefined: none (aws-kms without a MAC key). */
  readonly auditCheckpoints: {
    readonly key: AuditCheckpointKeyConfig | undefined;
    readonly intervalMs: number;
    readonly rows: number;
    readonly exportToLog: boolean;
  };
  /** Misuse signals (src/signals/): where alerts are posted, and which signals suspend a caller key. */
  readonly alerts: {
    /** Undefined: alerts are still metrics, audit rows and log lines, just not posted. */
    readonly webhook:
      | { readonly url: string; readonly secretFile: string; readonly caFile: string | undefined }
      | undefined;
    /** Empty by default: automatic suspension is opt-in, signal by signal. */
    readonly suspendOn: readonly MisuseSignalName[];
  };
}

/** providers/providers.json at the package root (from src/config/ or dist/src/config/). */
export const SHIPPED_PROVIDERS_FILE = fileURLToPath(
  new URL(
    import.meta.url.includes("/dist/")
      ? "../../../providers/providers.json"
      : "../../providers/providers.json",
    import.meta.url,
  ),
);

const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const offOr = (value: number | "off"): number | undefined => (value === "off" ? undefined : value);
const port = int(0, 65535);
const url = z.url();
// "1" switches a relaxation on; anything but "0" or "1" is a typo and is refused, not ignored.
const flag = z
  .enum(["0", "1"])
  .default("0")
  .transform((v) => v === "1");

/** The schema doubles as the list of every variable the broker knows (see test/unit/config). */
export const envSchema = z.object({
  // Switches no guard (review L7): `serve` is production unless a KEYBROKER_ALLOW_* names a
  // relaxation. Only the dev commands read it, to refuse NODE_ENV=production.
  NODE_ENV: z.enum(["development", "test", "production"]).optional(),
  KEYBROKER_ALLOW_HTTP_ISSUER: flag,
  KEYBROKER_ALLOW_LOOPBACK_PROVIDERS: flag,
  KEYBROKER_ALLOW_LOCAL_KEYRING: flag,
  KEYBROKER_ALLOW_EMBEDDED_DATABASE: flag,
  KEYBROKER_ALLOW_HTTP_ALERT_WEBHOOK: flag,
  KEYBROKER_PROCESS_METRICS: z.enum(["on", "off"]).default("on"),
  /** Set by the image build (Dockerfile ARG GIT_COMMIT); shown as a label of keybroker_build_info. */
  KEYBROKER_GIT_COMMIT: z
    .string()
    .regex(/^([0-9a-f]{7,40})?$/, "7 to 40 lowercase hex digits (or empty: unknown)")
    .optional(),
  ...tracingEnvShape,
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  // Loopback unless told otherwise: exposing a port is a decision, with TLS or the mesh opt-out (M3).
  KEYBROKER_GRPC_HOST: z.string().min(1).default("127.0.0.1"),
  KEYBROKER_GRPC_PORT: port.default(50051),
  KEYBROKER_CONNECT_HOST: z.string().min(1).optional(),
  /** Set to "off" to disable the Connect/gRPC-Web listener. */
  KEYBROKER_CONNECT_PORT: z.union([z.literal("off"), port]).default(8080),
  KEYBROKER_TLS_CERT_FILE: z.string().min(1).optional(),
  KEYBROKER_TLS_KEY_FILE: z.string().min(1).optional(),
  KEYBROKER_TLS_CLIENT_CA_FILE: z.string().min(1).optional(),
  /**
   * The one accepted value, "mesh-mtls", states that a service-mesh sidecar terminates mTLS in
   * front of the plaintext app ports; production refuses them off loopback otherwise (M3).
   */
  KEYBROKER_ALLOW_PLAINTEXT_LISTENERS: z.literal("mesh-mtls").optional(),
  KEYBROKER_ADMIN_GRPC_HOST: z.string().min(1).default("127.0.0.1"),
  /** Set to "off" to disable the AdminService listener (the CLI still works on the database). */
  KEYBROKER_ADMIN_GRPC_PORT: z.union([z.literal("off"), port]).default(50052),
  KEYBROKER_ADMIN_TLS_CERT_FILE: z.string().min(1).optional(),
  KEYBROKER_ADMIN_TLS_KEY_FILE: z.string().min(1).optional(),
  KEYBROKER_ADMIN_TLS_CLIENT_CA_FILE: z.string().min(1).optional(),
  // Per listener (L5): connections, calls per connection, idle and handshake timeouts.
  KEYBROKER_MAX_CONNECTIONS: int(1, 1_000_000).default(1_000),
  KEYBROKER_MAX_CONCURRENT_STREAMS: int(1, 10_000).default(100),
  KEYBROKER_CONNECTION_IDLE_TIMEOUT_MS: int(1_000, 86_400_000).default(300_000),
  KEYBROKER_HANDSHAKE_TIMEOUT_MS: int(100, 120_000).default(10_000),
  /** Unset: the largest provider maxRequestBytes plus framing (F3); at most 80 MiB. */
  KEYBROKER_MAX_RECEIVE_MESSAGE_BYTES: int(1_024, 80 * 1024 * 1024).optional(),
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
  KEYBROKER_ISSUER_CA_FILE: z.string().min(1).optional(),
  AUTH0_REQUIRED_PERMISSION: z.string().regex(/^\S+$/, "must be one permission, no spaces"),
  AUTH0_ALLOWED_AZP: z.string().min(1).optional(),
  AUTH0_CLOCK_TOLERANCE_SEC: int(0, 30).default(10),
  // Optional: a token older than this (by iat) is refused even before its exp (1 min .. 24 h).
  KEYBROKER_MAX_TOKEN_AGE_SEC: int(60, 86_400).optional(),
  // DPoP (RFC 9449): the origin proofs name in `htu` (https://host[:port], no path), whether every
  // token must be DPoP-bound, and how old (by `iat`) a proof may be, with the browser clock's skew.
  KEYBROKER_DPOP_HTU_ORIGIN: url.optional(),
  KEYBROKER_DPOP_REQUIRED: flag,
  KEYBROKER_DPOP_PROOF_MAX_AGE_SEC: int(5, 300).default(60),
  KEYBROKER_DPOP_CLOCK_SKEW_SEC: int(0, 30).default(5),
  KEYBROKER_JWKS_CACHE_MAX_AGE_MS: int(10_000, 86_400_000).default(600_000),
  KEYBROKER_JWKS_COOLDOWN_MS: int(1_000, 3_600_000).default(30_000),
  KEYBROKER_JWKS_TIMEOUT_MS: int(100, 30_000).default(5_000),
  KEYBROKER_TOKEN_CACHE_MAX_ENTRIES: int(0, 1_000_000).default(10_000),
  KEYBROKER_DATA_KEY_CACHE_MAX_AGE_MS: int(1_000, 3_600_000).default(300_000),
  KEYBROKER_DATA_KEY_CACHE_MAX_USES: int(1, 1_000_000).default(10_000),
  KEYBROKER_DATA_KEY_CACHE_MAX_ENTRIES: int(1, 1_000_000).default(10_000),
  // Issue 14: an idle user's unwrapped data key leaves memory after this long without a call.
  KEYBROKER_DATA_KEY_IDLE_TIMEOUT_MS: int(1_000, 3_600_000).default(120_000),
  // Comma-separated app client ids: the `aud` a back-channel logout token must carry. Unset: the
  // logout endpoint is not served and EndSession refuses; users can still end their own sessions.
  KEYBROKER_LOGOUT_AUDIENCES: z.string().min(1).optional(),
  // A logout token older than this (by iat) is stale and refused.
  KEYBROKER_LOGOUT_TOKEN_MAX_AGE_SEC: int(10, 3_600).default(300),
  // Fail closed: user calls are refused once this replica's logout view has gone unconfirmed this long.
  KEYBROKER_REVOCATION_MAX_STALENESS_MS: int(1_000, 600_000).default(10_000),
  // Issue 14 item 4, optional user PINs: wrong guesses allowed before a lockout, the backoff after
  // the first (doubling), the lockout, and scrypt's cost (2^N; 16 = 64 MiB per guess).
  KEYBROKER_PIN_MAX_ATTEMPTS: int(1, 100).default(5),
  KEYBROKER_PIN_BACKOFF_MS: int(0, 3_600_000).default(1_000),
  KEYBROKER_PIN_LOCKOUT_MS: int(1_000, 86_400_000).default(900_000),
  KEYBROKER_PIN_SCRYPT_LOG_N: int(15, 17).default(16),
  // One user's slow streams must not take the provider's whole connection pool (L8).
  // Default: half of the 16 connections a provider pool has, so one secret leaves room for others.
  KEYBROKER_MAX_CONCURRENT_CALLS_PER_SECRET: int(1, 10_000).default(8),
  KEYBROKER_MAX_QUEUED_CALLS_PER_SECRET: int(0, 100_000).default(256),
  KEYBROKER_MAX_CONCURRENT_CALLS_PER_CALLER: int(1, 100_000).default(1_024),
  // Calls per minute for providers whose registry entry names no limit of its own (issue 13).
  KEYBROKER_RATE_LIMIT_PER_SECRET_PER_MINUTE: z.union([z.literal("off"), int(1, 10_000_000)]).default("off"),
  KEYBROKER_RATE_LIMIT_PER_CALLER_KEY_PER_MINUTE: z
    .union([z.literal("off"), int(1, 10_000_000)])
    .default("off"),
  KEYBROKER_PROVIDERS_FILE: z.string().min(1).optional(),
  // Issue 15: OAuth connections (src/config/oauth-config.ts).
  ...oauthEnvSchema,
  // Comma-separated provider ids, e.g. "binance,github": record-and-warn instead of refuse.
  KEYBROKER_INSPECTION_RELAX: z
    .string()
    .regex(
      /^\s*[a-z0-9][a-z0-9-]{0,62}\s*(,\s*[a-z0-9][a-z0-9-]{0,62}\s*)*$/,
      "must be comma-separated provider ids",
    )
    .optional(),
  KEYBROKER_OUTBOUND_CA_FILE: z.string().min(1).optional(),
  KEYBROKER_SHUTDOWN_GRACE_MS: int(0, 120_000).default(10_000),
  // Refusals without a valid caller key are counted and written as one row per reason per interval.
  KEYBROKER_AUTH_FAILURE_SUMMARY_INTERVAL_MS: int(100, 3_600_000).default(60_000),
  // M1: an HMAC_256 KMS key (GENERATE_VERIFY_MAC) that signs audit checkpoints; with the local
  // keyring the key is derived from its file instead. Unset with aws-kms: no checkpoints (warned).
  KEYBROKER_AUDIT_CHECKPOINT_KEY_ID: z.string().min(1).optional(),
  KEYBROKER_AUDIT_CHECKPOINT_INTERVAL_MS: int(100, 3_600_000).default(10_000),
  KEYBROKER_AUDIT_CHECKPOINT_ROWS: int(1, 10_000_000).default(10_000),
  KEYBROKER_AUDIT_CHECKPOINT_LOG: z.enum(["on", "off"]).default("on"),
  // Read by `keybroker migrate` only: the role `serve` connects as, granted what it needs and no
  // more (INSERT/SELECT on the audit tables). A plain identifier: it is spliced into GRANT.
  KEYBROKER_RUNTIME_DB_ROLE: z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,62}$/, "must be a lowercase SQL identifier")
    .optional(),
  KEYBROKER_ALERT_WEBHOOK_URL: url.optional(),
  KEYBROKER_ALERT_WEBHOOK_SECRET_FILE: z.string().min(1).optional(),
  KEYBROKER_ALERT_WEBHOOK_CA_FILE: z.string().min(1).optional(),
  // Comma-separated signal names; empty or unset: no automatic suspension.
  KEYBROKER_SUSPEND_ON_SIGNALS: z.string().optional(),
});

export type KeybrokerEnv = z.input<typeof envSchema>;

export class ConfigError extends Error {
  override readonly name = "ConfigError";
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** Which rules apply: `serve` and the operator commands are production; only `keybroker dev` is not. */
export type ConfigMode = "production" | "development";

/**
 * Reads the configuration from an environment map. Every problem is reported at once;
 * messages name variables, never their values (DATABASE_URL may carry a password).
 * Production rules apply unless `mode` is "development" (`keybroker dev` alone): each guard a test
 * or a local stack must relax is switched off by its own KEYBROKER_ALLOW_* variable.
 */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>>,
  options: { readonly mode?: ConfigMode } = {},
): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`));
  }
  const e = parsed.data;
  const production = (options.mode ?? "production") === "production";
  const relaxed = (set: boolean): boolean => !production || set;
  const allowHttpIssuer = relaxed(e.KEYBROKER_ALLOW_HTTP_ISSUER);
  const allowLoopbackProviders = relaxed(e.KEYBROKER_ALLOW_LOOPBACK_PROVIDERS);
  const allowLocalKeyring = relaxed(e.KEYBROKER_ALLOW_LOCAL_KEYRING);
  const allowEmbeddedDatabase = relaxed(e.KEYBROKER_ALLOW_EMBEDDED_DATABASE);
  const allowHttpAlertWebhook = relaxed(e.KEYBROKER_ALLOW_HTTP_ALERT_WEBHOOK);
  const relaxations: Relaxation[] = [];
  if (allowHttpIssuer) relaxations.push("http_issuer");
  if (allowLoopbackProviders) relaxations.push("loopback_providers");
  if (allowLocalKeyring) relaxations.push("local_keyring");
  if (allowEmbeddedDatabase) relaxations.push("embedded_database");
  if (allowHttpAlertWebhook) relaxations.push("http_alert_webhook");
  const problems: string[] = [];

  // Even relaxed, plain http is for a loopback issuer only: a token key set fetched in clear
  // over a network could be swapped. A private CA needs KEYBROKER_ISSUER_CA_FILE, not http.
  const loopback = (u: string) => ["127.0.0.1", "localhost", "[::1]"].includes(new URL(u).hostname);
  const httpAllowed = (u: string) => allowHttpIssuer && loopback(u);
  if (new URL(e.AUTH0_ISSUER).protocol !== "https:" && !httpAllowed(e.AUTH0_ISSUER)) {
    problems.push(
      "AUTH0_ISSUER: must be https (http only for a loopback issuer with KEYBROKER_ALLOW_HTTP_ISSUER=1)",
    );
  }
  const jwksUrl = e.AUTH0_JWKS_URL ?? new URL(".well-known/jwks.json", e.AUTH0_ISSUER).toString();
  if (new URL(jwksUrl).protocol !== "https:" && !httpAllowed(jwksUrl)) {
    problems.push(
      "AUTH0_JWKS_URL: must be https (http only for a loopback issuer with KEYBROKER_ALLOW_HTTP_ISSUER=1)",
    );
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
    if (!allowEmbeddedDatabase) {
      problems.push(
        "DATABASE_URL: required (the embedded PGlite needs KEYBROKER_ALLOW_EMBEDDED_DATABASE=1 or keybroker dev)",
      );
    }
    database = { kind: "pglite", dataDir: e.KEYBROKER_PGLITE_DIR };
  }

  const keyring = keyringOf(e, allowLocalKeyring, problems);

  const grpcTls = tlsFilesOf(problems, "KEYBROKER_TLS", {
    certFile: e.KEYBROKER_TLS_CERT_FILE,
    keyFile: e.KEYBROKER_TLS_KEY_FILE,
    clientCaFile: e.KEYBROKER_TLS_CLIENT_CA_FILE,
  });
  const connect =
    e.KEYBROKER_CONNECT_PORT === "off"
      ? undefined
      : { host: e.KEYBROKER_CONNECT_HOST ?? e.KEYBROKER_GRPC_HOST, port: e.KEYBROKER_CONNECT_PORT };
  // Credentials cross these ports: in production, plaintext only on loopback unless a mesh
  // sidecar is declared to terminate mTLS in front of them (M3). Dev mode binds loopback anyway.
  if (production && grpcTls === undefined && e.KEYBROKER_ALLOW_PLAINTEXT_LISTENERS === undefined) {
    for (const [name, host] of [
      ["KEYBROKER_GRPC_HOST", e.KEYBROKER_GRPC_HOST],
      ["KEYBROKER_CONNECT_HOST", connect?.host],
    ] as const) {
      if (host !== undefined && !isLoopbackHost(host)) {
        problems.push(
          `${name}: a plaintext listener off loopback needs KEYBROKER_TLS_CERT_FILE and KEYBROKER_TLS_KEY_FILE, or KEYBROKER_ALLOW_PLAINTEXT_LISTENERS=mesh-mtls behind a service mesh that terminates mTLS`,
        );
      }
    }
  }
  const adminTls = tlsFilesOf(problems, "KEYBROKER_ADMIN_TLS", {
    certFile: e.KEYBROKER_ADMIN_TLS_CERT_FILE,
    keyFile: e.KEYBROKER_ADMIN_TLS_KEY_FILE,
    clientCaFile: e.KEYBROKER_ADMIN_TLS_CLIENT_CA_FILE,
  });
  // An admin key can shred any user: off loopback, production wants the listener's own mTLS,
  // and the mesh opt-out does not cover it (L6).
  if (
    production &&
    e.KEYBROKER_ADMIN_GRPC_PORT !== "off" &&
    !isLoopbackHost(e.KEYBROKER_ADMIN_GRPC_HOST) &&
    adminTls?.clientCaFile === undefined
  ) {
    problems.push(
      "KEYBROKER_ADMIN_GRPC_HOST: an AdminService listener off loopback needs mTLS (KEYBROKER_ADMIN_TLS_CERT_FILE, KEYBROKER_ADMIN_TLS_KEY_FILE and KEYBROKER_ADMIN_TLS_CLIENT_CA_FILE)",
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

  const auditCheckpointKey = checkpointKeyOf(e, problems);
  let logoutAudiences: string[] | undefined;
  if (e.KEYBROKER_LOGOUT_AUDIENCES !== undefined) {
    logoutAudiences = e.KEYBROKER_LOGOUT_AUDIENCES.split(",").map((a) => a.trim());
    if (logoutAudiences.some((a) => a.length === 0 || /\s/.test(a))) {
      problems.push("KEYBROKER_LOGOUT_AUDIENCES: comma-separated client ids, none empty");
    }
    // The API identifier is what access tokens carry: a logout token must never be one of those.
    if (logoutAudiences.includes(e.AUTH0_AUDIENCE)) {
      problems.push("KEYBROKER_LOGOUT_AUDIENCES: must name app client ids, not AUTH0_AUDIENCE");
    }
  }
  const alerts = parseAlerts(e, allowHttpAlertWebhook, loopback, problems);
  const dpop = parseDpop(e, problems);
  const oauth = parseOAuthConfig(
    e,
    { allowHttp: !production || relaxations.includes("loopback_providers"), isLoopbackHost },
    problems,
  );
  const tracing = parseTracing(e, problems);

  if (problems.length > 0) throw new ConfigError(problems);

  return Object.freeze({
    production,
    relaxations: Object.freeze(relaxations),
    processMetrics: e.KEYBROKER_PROCESS_METRICS === "on",
    tracing,
    gitCommit: e.KEYBROKER_GIT_COMMIT || "unknown",
    grpc: { host: e.KEYBROKER_GRPC_HOST, port: e.KEYBROKER_GRPC_PORT },
    connect,
    ops:
      e.KEYBROKER_METRICS_PORT === "off"
        ? undefined
        : { host: e.KEYBROKER_METRICS_HOST ?? e.KEYBROKER_GRPC_HOST, port: e.KEYBROKER_METRICS_PORT },
    grpcTls,
    plaintextListeners: e.KEYBROKER_ALLOW_PLAINTEXT_LISTENERS,
    admin:
      e.KEYBROKER_ADMIN_GRPC_PORT === "off"
        ? undefined
        : { host: e.KEYBROKER_ADMIN_GRPC_HOST, port: e.KEYBROKER_ADMIN_GRPC_PORT, tls: adminTls },
    listenerLimits: {
      maxConnections: e.KEYBROKER_MAX_CONNECTIONS,
      maxConcurrentStreams: e.KEYBROKER_MAX_CONCURRENT_STREAMS,
      idleTimeoutMs: e.KEYBROKER_CONNECTION_IDLE_TIMEOUT_MS,
      handshakeTimeoutMs: e.KEYBROKER_HANDSHAKE_TIMEOUT_MS,
    },
    maxReceiveMessageBytes: e.KEYBROKER_MAX_RECEIVE_MESSAGE_BYTES,
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
      issuerCaFile: e.KEYBROKER_ISSUER_CA_FILE,
      requiredPermission: e.AUTH0_REQUIRED_PERMISSION,
      allowedAzp: e.AUTH0_ALLOWED_AZP,
      clockToleranceSec: e.AUTH0_CLOCK_TOLERANCE_SEC,
      maxTokenAgeSec: e.KEYBROKER_MAX_TOKEN_AGE_SEC,
      jwksCacheMaxAgeMs: e.KEYBROKER_JWKS_CACHE_MAX_AGE_MS,
      jwksCooldownMs: e.KEYBROKER_JWKS_COOLDOWN_MS,
      jwksTimeoutMs: e.KEYBROKER_JWKS_TIMEOUT_MS,
      tokenCacheMaxEntries: e.KEYBROKER_TOKEN_CACHE_MAX_ENTRIES,
      dpop,
    },
    proxyConcurrency: {
      perSecret: e.KEYBROKER_MAX_CONCURRENT_CALLS_PER_SECRET,
      perSecretQueued: e.KEYBROKER_MAX_QUEUED_CALLS_PER_SECRET,
      perCaller: e.KEYBROKER_MAX_CONCURRENT_CALLS_PER_CALLER,
    },
    rateLimitDefaults: {
      perSecretPerMinute: offOr(e.KEYBROKER_RATE_LIMIT_PER_SECRET_PER_MINUTE),
      perCallerKeyPerMinute: offOr(e.KEYBROKER_RATE_LIMIT_PER_CALLER_KEY_PER_MINUTE),
    },
    dataKeyCache: {
      maxAgeMs: e.KEYBROKER_DATA_KEY_CACHE_MAX_AGE_MS,
      maxUses: e.KEYBROKER_DATA_KEY_CACHE_MAX_USES,
      maxEntries: e.KEYBROKER_DATA_KEY_CACHE_MAX_ENTRIES,
      idleMs: e.KEYBROKER_DATA_KEY_IDLE_TIMEOUT_MS,
    },
    sessions: {
      logoutAudiences: logoutAudiences === undefined ? undefined : Object.freeze(logoutAudiences),
      logoutTokenMaxAgeSec: e.KEYBROKER_LOGOUT_TOKEN_MAX_AGE_SEC,
      revocationMaxStalenessMs: e.KEYBROKER_REVOCATION_MAX_STALENESS_MS,
    },
    pin: {
      maxAttempts: e.KEYBROKER_PIN_MAX_ATTEMPTS,
      backoffMs: e.KEYBROKER_PIN_BACKOFF_MS,
      lockoutMs: e.KEYBROKER_PIN_LOCKOUT_MS,
      scryptLogN: e.KEYBROKER_PIN_SCRYPT_LOG_N,
    },
    providersFile: e.KEYBROKER_PROVIDERS_FILE ?? SHIPPED_PROVIDERS_FILE,
    oauth,
    inspectionRelaxed: Object.freeze(
      [...new Set((e.KEYBROKER_INSPECTION_RELAX ?? "").split(",").map((id) => id.trim()))].filter(
        (id) => id !== "",
      ),
    ),
    outboundCaFile: e.KEYBROKER_OUTBOUND_CA_FILE,
    logLevel: e.LOG_LEVEL,
    shutdownGraceMs: e.KEYBROKER_SHUTDOWN_GRACE_MS,
    authFailureSummaryIntervalMs: e.KEYBROKER_AUTH_FAILURE_SUMMARY_INTERVAL_MS,
    auditCheckpoints: {
      key: auditCheckpointKey,
      intervalMs: e.KEYBROKER_AUDIT_CHECKPOINT_INTERVAL_MS,
      rows: e.KEYBROKER_AUDIT_CHECKPOINT_ROWS,
      exportToLog: e.KEYBROKER_AUDIT_CHECKPOINT_LOG === "on",
    },
    alerts,
  });
}

type KeyringEnv = Pick<
  z.output<typeof envSchema>,
  | "KEYBROKER_KEYRING"
  | "KEYBROKER_KMS_KEY_ID"
  | "AWS_REGION"
  | "KEYBROKER_KMS_ENDPOINT"
  | "KEYBROKER_KMS_MAX_ATTEMPTS"
  | "KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS"
  | "KEYBROKER_LOCAL_KEYRING_FILE"
>;

/** The master keyring: AWS KMS, or the local file keyring where it is allowed. */
function keyringOf(e: KeyringEnv, allowLocalKeyring: boolean, problems: string[]): Config["keyring"] {
  if (e.KEYBROKER_KEYRING === "aws-kms") {
    if (e.KEYBROKER_KMS_KEY_ID === undefined) problems.push("KEYBROKER_KMS_KEY_ID: required with aws-kms");
    if (e.AWS_REGION === undefined) problems.push("AWS_REGION: required with aws-kms");
    return {
      kind: "aws-kms",
      keyId: e.KEYBROKER_KMS_KEY_ID ?? "",
      region: e.AWS_REGION ?? "",
      endpoint: e.KEYBROKER_KMS_ENDPOINT,
      maxAttempts: e.KEYBROKER_KMS_MAX_ATTEMPTS,
      attemptTimeoutMs: e.KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS,
    };
  }
  if (!allowLocalKeyring) {
    problems.push(
      "KEYBROKER_KEYRING: the local keyring needs KEYBROKER_ALLOW_LOCAL_KEYRING=1 or keybroker dev; use aws-kms",
    );
  }
  if (e.KEYBROKER_LOCAL_KEYRING_FILE === undefined) {
    problems.push("KEYBROKER_LOCAL_KEYRING_FILE: required with the local keyring");
  }
  return { kind: "local", file: e.KEYBROKER_LOCAL_KEYRING_FILE ?? "" };
}

/**
 * The alert webhook and automatic suspension. The webhook's secret comes from a file (never an
 * env value that `ps` or a crash dump could show); the URL is https, or http on loopback only
 * with KEYBROKER_ALLOW_HTTP_ALERT_WEBHOOK=1: an alert in clear could be read or forged in transit.
 */
function parseAlerts(
  e: z.output<typeof envSchema>,
  allowHttp: boolean,
  loopback: (u: string) => boolean,
  problems: string[],
): Config["alerts"] {
  const suspendOn: MisuseSignalName[] = [];
  for (const name of (e.KEYBROKER_SUSPEND_ON_SIGNALS ?? "").split(",").map((s) => s.trim())) {
    if (name === "") continue;
    if (isMisuseSignalName(name)) suspendOn.push(name);
    else
      problems.push(
        `KEYBROKER_SUSPEND_ON_SIGNALS: unknown signal "${name}" (one of ${MISUSE_SIGNALS.join(", ")})`,
      );
  }
  const url = e.KEYBROKER_ALERT_WEBHOOK_URL;
  if (url === undefined) {
    if (
      e.KEYBROKER_ALERT_WEBHOOK_SECRET_FILE !== undefined ||
      e.KEYBROKER_ALERT_WEBHOOK_CA_FILE !== undefined
    ) {
      problems.push(
        "KEYBROKER_ALERT_WEBHOOK_URL: required with KEYBROKER_ALERT_WEBHOOK_SECRET_FILE or _CA_FILE",
      );
    }
    return { webhook: undefined, suspendOn };
  }
  if (
    new URL(url).protocol !== "https:" &&
    !(allowHttp && new URL(url).protocol === "http:" && loopback(url))
  ) {
    problems.push(
      "KEYBROKER_ALERT_WEBHOOK_URL: must be https (http only on loopback with KEYBROKER_ALLOW_HTTP_ALERT_WEBHOOK=1)",
    );
  }
  if (e.KEYBROKER_ALERT_WEBHOOK_SECRET_FILE === undefined) {
    problems.push(
      "KEYBROKER_ALERT_WEBHOOK_SECRET_FILE: required with KEYBROKER_ALERT_WEBHOOK_URL (alerts are signed)",
    );
  }
  return {
    webhook: {
      url,
      secretFile: e.KEYBROKER_ALERT_WEBHOOK_SECRET_FILE ?? "",
      caFile: e.KEYBROKER_ALERT_WEBHOOK_CA_FILE,
    },
    suspendOn,
  };
}

type CheckpointKeyEnv = Pick<
  z.output<typeof envSchema>,
  | "KEYBROKER_KEYRING"
  | "KEYBROKER_AUDIT_CHECKPOINT_KEY_ID"
  | "AWS_REGION"
  | "KEYBROKER_KMS_ENDPOINT"
  | "KEYBROKER_KMS_MAX_ATTEMPTS"
  | "KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS"
  | "KEYBROKER_LOCAL_KEYRING_FILE"
>;

// With aws-kms, checkpoints need their own HMAC key (a symmetric encryption key cannot make MACs);
// with the local keyring (already refused in production unless relaxed) the file serves.
function checkpointKeyOf(e: CheckpointKeyEnv, problems: string[]): AuditCheckpointKeyConfig | undefined {
  if (e.KEYBROKER_KEYRING === "local") {
    if (e.KEYBROKER_AUDIT_CHECKPOINT_KEY_ID !== undefined) {
      problems.push("KEYBROKER_AUDIT_CHECKPOINT_KEY_ID: an HMAC KMS key needs KEYBROKER_KEYRING=aws-kms");
    }
    return e.KEYBROKER_LOCAL_KEYRING_FILE === undefined
      ? undefined
      : { kind: "local", file: e.KEYBROKER_LOCAL_KEYRING_FILE };
  }
  if (e.KEYBROKER_AUDIT_CHECKPOINT_KEY_ID === undefined) return undefined;
  if (e.AWS_REGION === undefined) problems.push("AWS_REGION: required with aws-kms");
  return {
    kind: "aws-kms",
    keyId: e.KEYBROKER_AUDIT_CHECKPOINT_KEY_ID,
    region: e.AWS_REGION ?? "",
    endpoint: e.KEYBROKER_KMS_ENDPOINT,
    maxAttempts: e.KEYBROKER_KMS_MAX_ATTEMPTS,
    attemptTimeoutMs: e.KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS,
  };
}

/**
 * What `keybroker audit verify` needs: the database, and the checkpoint key when a keyring is
 * configured (undefined otherwise: the chain is checked, its checkpoints are not).
 */
export function loadAuditVerifyConfig(env: Readonly<Record<string, string | undefined>>): {
  readonly database: DatabaseConfig;
  readonly checkpointKey: AuditCheckpointKeyConfig | undefined;
} {
  const database = loadDatabaseConfig(env);
  const parsed = envSchema
    .pick({
      KEYBROKER_ALLOW_LOCAL_KEYRING: true,
      KEYBROKER_KEYRING: true,
      KEYBROKER_AUDIT_CHECKPOINT_KEY_ID: true,
      AWS_REGION: true,
      KEYBROKER_KMS_ENDPOINT: true,
      KEYBROKER_KMS_MAX_ATTEMPTS: true,
      KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS: true,
      KEYBROKER_LOCAL_KEYRING_FILE: true,
    })
    .partial({ KEYBROKER_KEYRING: true })
    .safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`));
  }
  const e = parsed.data;
  if (e.KEYBROKER_KEYRING === undefined) return { database, checkpointKey: undefined };
  const problems: string[] = [];
  if (e.KEYBROKER_KEYRING === "local" && !e.KEYBROKER_ALLOW_LOCAL_KEYRING) {
    problems.push("KEYBROKER_KEYRING: the local keyring needs KEYBROKER_ALLOW_LOCAL_KEYRING=1; use aws-kms");
  }
  const checkpointKey = checkpointKeyOf({ ...e, KEYBROKER_KEYRING: e.KEYBROKER_KEYRING }, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return { database, checkpointKey };
}

/** `keybroker migrate`: the runtime role to grant to, if any (KEYBROKER_RUNTIME_DB_ROLE). */
export function loadRuntimeRole(env: Readonly<Record<string, string | undefined>>): string | undefined {
  const parsed = envSchema.pick({ KEYBROKER_RUNTIME_DB_ROLE: true }).safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`));
  }
  return parsed.data.KEYBROKER_RUNTIME_DB_ROLE;
}

/** Loopback names and addresses: a listener there is reachable from this host (or pod) only. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return bare === "localhost" || bare === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare);
}

/** One listener's TLS files: cert and key together, a client CA only with them. */
function tlsFilesOf(
  problems: string[],
  prefix: string,
  files: { certFile: string | undefined; keyFile: string | undefined; clientCaFile: string | undefined },
): ServerTlsConfig | undefined {
  const { certFile, keyFile, clientCaFile } = files;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    problems.push(`${prefix}_KEY_FILE: set both ${prefix}_CERT_FILE and ${prefix}_KEY_FILE, or neither`);
  }
  if (clientCaFile !== undefined && certFile === undefined) {
    problems.push(`${prefix}_CLIENT_CA_FILE: mTLS needs ${prefix}_CERT_FILE and ${prefix}_KEY_FILE`);
  }
  if (certFile === undefined || keyFile === undefined) return undefined;
  return { certFile, keyFile, ...(clientCaFile === undefined ? {} : { clientCaFile }) };
}

/** One start-up warning line per relaxation `config` carries (logged by `serve` and `dev`). */
export function relaxationWarnings(config: Pick<Config, "relaxations">): string[] {
  return config.relaxations.map((r) => {
    const { variable, allows } = RELAXATIONS[r];
    return `production guard relaxed (${variable}): ${allows}. Never in production.`;
  });
}

/**
 * Just the database part, for commands that touch nothing else (`migrate`, `caller-keys`): the
 * embedded PGlite, as for `serve`, only with KEYBROKER_ALLOW_EMBEDDED_DATABASE=1.
 */
export function loadDatabaseConfig(env: Readonly<Record<string, string | undefined>>): DatabaseConfig {
  const parsed = envSchema
    .pick({
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: true,
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
  if (!e.KEYBROKER_ALLOW_EMBEDDED_DATABASE) {
    throw new ConfigError([
      "DATABASE_URL: required (the embedded PGlite needs KEYBROKER_ALLOW_EMBEDDED_DATABASE=1)",
    ]);
  }
  return { kind: "pglite", dataDir: e.KEYBROKER_PGLITE_DIR };
}

/** What an operator command on keys needs (`rewrap`, `user`): no issuer, no listeners. */
export interface KeyedOpsConfig {
  readonly database: DatabaseConfig;
  readonly keyring: Config["keyring"];
  readonly relaxations: readonly Relaxation[];
}

/**
 * The database and the keyring, as `serve` reads them, and nothing else: an operator rewrapping
 * keys needs no AUTH0_* variables. Production rules, relaxed only by their own variables.
 */
export function loadKeyedOpsConfig(env: Readonly<Record<string, string | undefined>>): KeyedOpsConfig {
  const database = loadDatabaseConfig(env);
  const parsed = envSchema
    .pick({
      KEYBROKER_ALLOW_LOCAL_KEYRING: true,
      KEYBROKER_ALLOW_EMBEDDED_DATABASE: true,
      KEYBROKER_KEYRING: true,
      KEYBROKER_KMS_KEY_ID: true,
      AWS_REGION: true,
      KEYBROKER_KMS_ENDPOINT: true,
      KEYBROKER_KMS_MAX_ATTEMPTS: true,
      KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS: true,
      KEYBROKER_LOCAL_KEYRING_FILE: true,
    })
    .safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`));
  }
  const e = parsed.data;
  const problems: string[] = [];
  const keyring = keyringOf(e, e.KEYBROKER_ALLOW_LOCAL_KEYRING, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  const relaxations: Relaxation[] = [];
  if (e.KEYBROKER_ALLOW_LOCAL_KEYRING) relaxations.push("local_keyring");
  if (e.KEYBROKER_ALLOW_EMBEDDED_DATABASE) relaxations.push("embedded_database");
  return Object.freeze({ database, keyring, relaxations: Object.freeze(relaxations) });
}

/**
 * The DPoP settings, or undefined when no origin is set. The origin must be exactly what a
 * client's proof names: an https origin with no path, query or fragment (http only on loopback,
 * for tests and `keybroker dev`). Requiring DPoP without an origin would refuse every call.
 */
function parseDpop(e: z.output<typeof envSchema>, problems: string[]): Config["auth"]["dpop"] {
  const raw = e.KEYBROKER_DPOP_HTU_ORIGIN;
  if (raw === undefined) {
    if (e.KEYBROKER_DPOP_REQUIRED) problems.push("KEYBROKER_DPOP_REQUIRED: needs KEYBROKER_DPOP_HTU_ORIGIN");
    return undefined;
  }
  const origin = new URL(raw);
  const loopbackHttp =
    origin.protocol === "http:" && ["127.0.0.1", "[::1]", "localhost"].includes(origin.hostname);
  if ((origin.protocol !== "https:" && !loopbackHttp) || origin.origin !== raw.replace(/\/$/, "")) {
    problems.push(
      "KEYBROKER_DPOP_HTU_ORIGIN: an https origin (scheme://host[:port]) with no path, query or user info",
    );
    return undefined;
  }
  return Object.freeze({
    required: e.KEYBROKER_DPOP_REQUIRED,
    htuOrigin: origin.origin,
    maxAgeSec: e.KEYBROKER_DPOP_PROOF_MAX_AGE_SEC,
    clockSkewSec: e.KEYBROKER_DPOP_CLOCK_SKEW_SEC,
  });
}
