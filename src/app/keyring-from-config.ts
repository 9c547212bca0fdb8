import type { KMSClient } from "@aws-sdk/client-kms";
import type { Config } from "../config/config.js";
import { BrokerError, isBrokerError } from "../errors.js";
import {
  createAwsKmsKeyring,
  createKmsClient,
  describeKmsKey,
  resolveKmsKeyArn,
} from "../keys/aws-kms-keyring.js";
import { isLocalKeyId, localKeyVersion } from "../keys/key-ids.js";
import type { Keyring } from "../keys/keyring.js";
import { loadOrCreateLocalKeyring } from "../keys/local-keyring.js";
import { readMasterKeys } from "../keys/local-keyring-file.js";

/** The configured keyring, plus what an operator command needs around it. */
export interface ConfiguredKeyring {
  readonly keyring: Keyring;
  /**
   * The id rows record for an operator's key reference: a KMS key id, ARN or alias
   * resolves to the key ARN; "local:N" stays as it is; "current" is the configured key.
   * Refuses (failed_precondition, naming the reference) a key that does not exist or cannot
   * wrap now (disabled, pending deletion, not a symmetric encryption key).
   */
  resolveKeyId(reference: string, signal?: AbortSignal): Promise<string>;
  /** Releases the KMS client's sockets (a no-op for the local keyring). */
  close(): void;
}

/**
 * The keyring the configuration names, as the broker and the operator commands both use it
 * (one code path). The caller owns the result and calls `close` when done: app/keys.ts
 * registers it with the lifecycle the moment it is opened.
 */
export async function openKeyringFromConfig(
  config: Pick<Config, "keyring" | "relaxations">,
): Promise<ConfiguredKeyring> {
  if (config.keyring.kind === "local") {
    const { file } = config.keyring;
    const keyring = await loadOrCreateLocalKeyring({
      path: config.keyring.file,
      // The keyring's own refusal stays armed unless the config explicitly relaxed it (L7).
      nodeEnv: config.relaxations.includes("local_keyring") ? "development" : "production",
    });
    return {
      keyring,
      async resolveKeyId(reference) {
        if (reference === "current") return keyring.currentKeyId();
        if (!isLocalKeyId(reference)) {
          throw new BrokerError("invalid_argument", "with the local keyring, name the key as local:N");
        }
        const { keys } = await readMasterKeys(file);
        const master = keys.get(localKeyVersion(reference) ?? 0);
        const usable = master !== undefined && !master.disabled;
        for (const key of keys.values()) key.material.fill(0);
        if (!usable) {
          throw new BrokerError(
            "failed_precondition",
            `master key ${reference} ${master === undefined ? "does not exist in the local keyring" : "is disabled"}`,
          );
        }
        return reference;
      },
      close() {},
    };
  }
  const client: KMSClient = createKmsClient({
    region: config.keyring.region,
    maxAttempts: config.keyring.maxAttempts,
    requestTimeoutMs: config.keyring.attemptTimeoutMs,
    ...(config.keyring.endpoint === undefined ? {} : { endpoint: config.keyring.endpoint }),
  });
  try {
    // Rows record the ARN that wrapped them; resolve an alias once so they compare equal.
    const keyArn = await resolveKmsKeyArn(client, config.keyring.keyId);
    const keyring = createAwsKmsKeyring({ client, keyId: keyArn });
    return {
      keyring,
      async resolveKeyId(reference, signal) {
        if (reference === "current") return keyArn;
        let described: Awaited<ReturnType<typeof describeKmsKey>>;
        try {
          described = await describeKmsKey(client, reference, signal);
        } catch (err) {
          if (isBrokerError(err) && err.code === "failed_precondition") {
            throw new BrokerError(
              "failed_precondition",
              `master key ${reference} does not exist, or this role may not describe it`,
              { cause: err },
            );
          }
          throw err;
        }
        if (!described.usable) {
          throw new BrokerError(
            "failed_precondition",
            `master key ${reference} cannot wrap data keys (state ${described.state})`,
          );
        }
        return described.arn;
      },
      close: () => client.destroy(),
    };
  } catch (err) {
    client.destroy();
    throw err;
  }
}
