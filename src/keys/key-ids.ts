import { BrokerError } from "../errors.js";

/**
 * Master key ids as rows record them, in one place. A row stores the id its keyring reported
 * when wrapping: a KMS key ARN (KMS never reports an alias or a bare key id) or, for the
 * development keyring, "local:N". Aliases and bare key ids are only ever operator input,
 * resolved to the ARN before use (aws-kms-keyring.ts resolveKmsKeyArn).
 */

// "local:N": a positive version without leading zeros, at most 10 digits (it is stored as a u32).
const LOCAL_KEY_ID = /^local:([1-9][0-9]{0,9})$/;
// The id KMS reports on Decrypt is always the key ARN (aliases and bare ids never come back).
const KMS_KEY_ARN = /^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key\/[A-Za-z0-9-]+$/;

/** The id of version `version` of the local keyring's master key. */
export function localKeyId(version: number): string {
  return `local:${version}`;
}

/** True for "local:N", the local keyring's master key ids. */
export function isLocalKeyId(id: string): boolean {
  return LOCAL_KEY_ID.test(id);
}

/** The version named by a "local:N" id, or undefined for anything else. */
export function localKeyVersion(id: string): number | undefined {
  const version = LOCAL_KEY_ID.exec(id)?.[1];
  return version === undefined ? undefined : Number(version);
}

/** True for a KMS key ARN (not an alias ARN), the only KMS id a row records. */
export function isKmsKeyArn(id: string): boolean {
  return KMS_KEY_ARN.test(id);
}

/**
 * Parses a comma-separated list of accepted master keys (KEYBROKER_ACCEPTED_MASTER_KEYS).
 * Aliases are refused: an alias can be re-pointed, and the keyring reports ARNs, so an alias
 * would never match anyway.
 */
export function parseAcceptedMasterKeys(value: string): string[] {
  const ids = value
    .split(",")
    .map((id) => id.trim())
    .filter((id) => id !== "");
  if (ids.length === 0) throw new BrokerError("invalid_argument", "list at least one accepted master key");
  const bad = ids.filter((id) => !(isLocalKeyId(id) || isKmsKeyArn(id)));
  if (bad.length > 0) {
    throw new BrokerError(
      "invalid_argument",
      `accepted master keys must be key ARNs or local:N (not aliases): ${bad.join(", ")}`,
    );
  }
  return ids;
}
