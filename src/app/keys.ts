import type { Config } from "../config/config.js";
import { createDataKeyCache, type DataKeyCache } from "../keys/data-key-cache.js";
import type { Keyring } from "../keys/keyring.js";
import { loadOrCreatePepper } from "../keys/pepper.js";
import { createRetiredKeyGuard } from "../keys/retired-key-guard.js";
import { createUserDataKeys, type UserDataKeys } from "../keys/user-data-keys.js";
import { deriveFingerprintKey } from "../keys/user-ref.js";
import { createInstrumentedKeyring } from "../observability/instrumented-keyring.js";
import type { Metrics } from "../observability/metrics.js";
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

export interface KeysDeps {
  readonly config: Pick<Config, "keyring" | "relaxations" | "acceptedMasterKeys">;
  readonly database: DatabaseHandle;
  readonly metrics: Pick<Metrics, "kmsCall">;
  readonly dataKeyCache: DataKeyCache;
  /** A keyring the caller built (tests, benches): used as is, and the caller closes it. */
  readonly keyring?: Keyring | undefined;
}

/** The key hierarchy the broker serves with. */
export interface Keys {
  /** Instrumented, and failing closed on retired master keys when accepted keys are configured. */
  readonly keyring: Keyring;
  /** The user-ref pepper; zeroed when the lifecycle stops. */
  readonly pepper: Buffer;
  /** Derived from the pepper; zeroed when the lifecycle stops. */
  readonly fingerprintKey: Buffer;
  readonly userDataKeys: UserDataKeys;
}

export async function openKeys(lifecycle: Lifecycle, deps: KeysDeps): Promise<Keys> {
  const { config, database, metrics, dataKeyCache } = deps;
  const raw = deps.keyring ?? (await openConfiguredKeyring(lifecycle, config)).keyring;
  const instrumented = createInstrumentedKeyring({ keyring: raw, metrics });
  // After a master-key rotation, rows still wrapped under a retired key fail closed.
  const keyring =
    config.acceptedMasterKeys === undefined
      ? instrumented
      : createRetiredKeyGuard(instrumented, { acceptedKeyIds: config.acceptedMasterKeys });
  const pepper = await loadOrCreatePepper(database.db, keyring);
  const fingerprintKey = deriveFingerprintKey(pepper);
  lifecycle.defer("pepper", () => {
    pepper.fill(0);
    fingerprintKey.fill(0);
  });
  return {
    keyring,
    pepper,
    fingerprintKey,
    userDataKeys: createUserDataKeys({ keyring, cache: dataKeyCache }),
  };
}
