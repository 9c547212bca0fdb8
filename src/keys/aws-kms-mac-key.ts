import { GenerateMacCommand, type KMSClient, VerifyMacCommand } from "@aws-sdk/client-kms";
import { BrokerError } from "../errors.js";
import { mapKmsError, signalOption } from "./aws-kms-keyring.js";
import type { MacKey } from "./mac-key.js";

const MAC_ALGORITHM = "HMAC_SHA_256";

export interface AwsKmsMacKeyOptions {
  /** Owned by the MacKey: destroyed on close. */
  readonly client: KMSClient;
  /** An HMAC_256 KMS key (KeyUsage GENERATE_VERIFY_MAC), as its ARN. */
  readonly keyArn: string;
}

/**
 * Checkpoint MACs by an HMAC KMS key: the key never leaves KMS, and the broker's IAM policy may
 * allow GenerateMac but not VerifyMac (the auditor's role verifies). Only the configured key is
 * trusted: a checkpoint naming any other key does not verify, whatever KMS would say.
 */
export function createAwsKmsMacKey(options: AwsKmsMacKeyOptions): MacKey {
  const { client, keyArn } = options;
  return {
    keyId: keyArn,
    async generateMac(message, callOptions) {
      const signal = callOptions?.signal;
      try {
        const out = await client.send(
          new GenerateMacCommand({ KeyId: keyArn, Message: message, MacAlgorithm: MAC_ALGORITHM }),
          signalOption(signal),
        );
        if (out.Mac === undefined) {
          throw new BrokerError("internal", "key management service returned an incomplete response");
        }
        return Buffer.from(out.Mac);
      } catch (err) {
        throw mapKmsError(err, signal);
      }
    },
    async verifyMac(message, mac, keyId, callOptions) {
      if (keyId !== keyArn) return false;
      const signal = callOptions?.signal;
      try {
        const out = await client.send(
          new VerifyMacCommand({ KeyId: keyArn, Message: message, Mac: mac, MacAlgorithm: MAC_ALGORITHM }),
          signalOption(signal),
        );
        return out.MacValid === true;
      } catch (err) {
        // KMS answers a MAC that does not verify with an error, not MacValid: false.
        if (err instanceof Error && err.name === "KMSInvalidMacException") return false;
        throw mapKmsError(err, signal);
      }
    },
    close: () => client.destroy(),
  };
}
