import type { Config } from "../config/config.js";
import { createDataKeyCache, type DataKeyCache } from "../keys/data-key-cache.js";
import type { Keyring } from "../keys/keyring.js";
import { createKeyringCircuitBreaker } from "../keys/keyring-circuit-breaker.js";
import { loadOrCreatePepper } from "../keys/pepper.js";
import { createPinSessions, type PinSessions } from "../keys/pin-sessions.js";
import { createRetiredKeyGuard } from "../keys/retired-key-guard.js";
import { createUserDataKeys, type UserDataKeys } from "../keys/user-data-keys.js";
import { deriveFingerprintKey } from "../keys/user-ref.js";
import type { Logger } from "../log/logger.js";
import { createInstrumentedKeyring } from "../observability/instrumented-keyring.js";
import type { Metrics } from "../observability/metrics.js";
import { tracedKeyring } from "../observability/traced-parts.js";
import type { Tracing } from "../observability/tracing.js";
import type { DatabaseHandle } from "../store/database.js";
import { type ConfiguredKeyring, openKeyringFromConfig } from "./keyring-from-config.js";
import type { Lifecycle } from "./lifecycle.js";

// Expiry is otherwise only checked on lookup: sweep so idle users' keys leave memory.
const CACHE_SWEEP_MS = 30_000;

/** The configured keyring; its KMS client (sockets) is released when the lifecycle stops. */
export async function openConfiguredKeyring(
  lifecycle: Lifecycle,
  config: Pick<Config, "keyring" | "relaxations">,
): Promise<ConfiguredKeyring> {
  const configured = await openKeyringFromConfig(config);
  lifecycle.defer("keyring", () => configured.close());
  return configured;
}

/** Unwrapped data keys held briefly in memory; swept periodically, zeroed on stop. */
export function openDataKeyCache(lifecycle: Lifecycle, options: Config["dataKeyCache"]): DataKeyCache {
  const cache = createDataKeyCache(options);
  const sweep = setInterval(() => cache.evictExpired(), CACHE_SWEEP_MS);
  sweep.unref();
  lifecycle.defer("data-key cache", () => {
    clearInterval(sweep);
    cache.clear();
  });
  return cache;
}

/** PIN users' unlocked data keys (issue 14 item 4): same idle timeout and bound as the cache. */
function openPinSessions(lifecycle: Lifecycle, options: Config["dataKeyCache"] | undefined): PinSessions {
  const sessions = createPinSessions({
    idleMs: options?.idleMs ?? 120_000,
    maxEntries: options?.maxEntries ?? 10_000,
  });
  const sweep = setInterval(() => sessions.evictExpired(), CACHE_SWEEP_MS);
  sweep.unref();
  lifecycle.defer("PIN sessions", () => {
    clearInterval(sweep);
    sessions.clear();
  });
  return sessions;
}

export interface KeysDeps {
  readonly config: Pick<Config, "keyring" | "relaxations" | "acceptedMasterKeys" | "keyringBreaker"> &
    Partial<Pick<Config, "dataKeyCache">>;
  readonly database: DatabaseHandle;
  readonly logger: Pick<Logger, "warn" | "info">;
  readonly metrics: Pick<Metrics, "kmsCall">;
  readonly dataKeyCache: DataKeyCache;
  /** A keyring the caller built (tests, benches): used as is, and the caller closes it. */
  readonly keyring?: Keyring | undefined;
  /** When tracing is on: every keyring call inside a span. */
  readonly tracing?: Tracing | undefined;
}

/** The key hierarchy the broker serves with. */
export interface Keys {
  /**
   * Instrumented, failing fast while the keyring is down (circuit breaker), and failing closed
   * on any master key not accepted (by default every key but the configured one).
   */
  readonly keyring: Keyring;
  /** The user-ref pepper; zeroed when the lifecycle stops. */
  readonly pepper: Buffer;
  /** Derived from the pepper; zeroed when the lifecycle stops. */
  readonly fingerprintKey: Buffer;
  readonly userDataKeys: UserDataKeys;
  /** Unlocked PIN sessions, in this process only; zeroed when the lifecycle stops. */
  readonly pinSessions: PinSessions;
}

export async function openKeys(lifecycle: Lifecycle, deps: KeysDeps): Promise<Keys> {
  const { config, database, metrics, dataKeyCache, logger } = deps;
  const raw = deps.keyring ?? (await openConfiguredKeyring(lifecycle, config)).keyring;
  // Inside the instrumentation, so calls refused while it is open count as unavailable.
  const breaker = createKeyringCircuitBreaker(raw, {
    ...config.keyringBreaker,
    onStateChange(state) {
      if (state === "open") {
        logger.warn(
          { openMs: config.keyringBreaker.openMs },
          "the keyring keeps failing: new key operations fail fast until a probe call succeeds",
        );
      } else {
        logger.info("the keyring answers again: key operations resumed");
      }
    },
  });
  const instrumented = createInstrumentedKeyring({ keyring: breaker, metrics });
  // Only the configured master key unless more are listed (a rotation in progress): a row naming
  // any other key fails closed before the KMS is asked (M2). The configured key is already an
  // ARN (resolved once at start-up), as every row records it.
  const guarded = createRetiredKeyGuard(instrumented, {
    acceptedKeyIds: config.acceptedMasterKeys ?? [raw.currentKeyId()],
    acceptCurrentKey: config.acceptedMasterKeys === undefined,
  });
  // Outermost, so a span also shows a refusal by the guard or the open breaker.
  const keyring = deps.tracing === undefined ? guarded : tracedKeyring(guarded, deps.tracing);
  const pepper = await loadOrCreatePepper(database.db, keyring);
  const fingerprintKey = deriveFingerprintKey(pepper);
  lifecycle.defer("pepper", () => {
    pepper.fill(0);
    fingerprintKey.fill(0);
  });
  const pinSessions = openPinSessions(lifecycle, config.dataKeyCache);
  return {
    keyring,
    pepper,
    fingerprintKey,
    userDataKeys: createUserDataKeys({ keyring, cache: dataKeyCache, pinSessions }),
    pinSessions,
  };
}
