import { createCipheriv, createDecipheriv, randomBytes, randomFillSync } from "node:crypto";
import { canonicalContext, lengthPrefixed } from "../crypto/canonical-encoding.js";
import { BrokerError } from "../errors.js";
import { localKeyId, localKeyVersion } from "./key-ids.js";
import type {
  EncryptionContext,
  GeneratedDataKey,
  Keyring,
  KeyringCallOptions,
  UnwrappedDataKey,
  WrappedKey,
} from "./keyring.js";
import {
  createKeyringFileIfMissing,
  keyringFileSignature,
  type MasterKey,
  type MasterKeys,
  readMasterKeys,
} from "./local-keyring-file.js";

/**
 * DEVELOPMENT ONLY. Master keys in a local JSON file (local-keyring-file.ts) stand in for a KMS
 * so the broker runs with no cloud account. The file is the whole secret (anyone who reads it and
 * the database reads every key), so the keyring is refused outright in production, where the KMS
 * key policy — not a file — must grant decrypt (T4).
 */

const WRAP_FORMAT_V1 = 0x01;
const AAD_LABEL = "keybroker/local-keyring-wrap/v1";
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
// [format][u32 master key version][nonce][wrapped 32-byte key][tag]
const WRAPPED_BYTES = 1 + 4 + NONCE_BYTES + KEY_BYTES + TAG_BYTES;

export interface LocalKeyringOptions {
  readonly path: string;
  readonly nodeEnv: string | undefined;
}

function precondition(message: string): BrokerError {
  return new BrokerError("failed_precondition", message);
}

function wrapAad(version: number, context: EncryptionContext): Buffer {
  const versionBytes = Buffer.alloc(4);
  versionBytes.writeUInt32BE(version, 0);
  return lengthPrefixed(AAD_LABEL, Uint8Array.of(WRAP_FORMAT_V1), versionBytes, canonicalContext(context));
}

function wrapUnder(master: MasterKey, plaintext: Buffer, context: EncryptionContext): Buffer {
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv("aes-256-gcm", master.material, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(wrapAad(master.version, context));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  const header = Buffer.alloc(5);
  header.writeUInt8(WRAP_FORMAT_V1, 0);
  header.writeUInt32BE(master.version, 1);
  return Buffer.concat([header, nonce, body, cipher.getAuthTag()]);
}

function integrityFailure(reason: string, cause?: unknown): BrokerError {
  return new BrokerError("data_loss", "stored data key failed its integrity check", {
    cause: cause ?? new Error(reason),
  });
}

function usable(master: MasterKey | undefined, version: number): MasterKey {
  if (master === undefined) throw precondition(`master key ${localKeyId(version)} does not exist`);
  if (master.disabled) throw precondition(`master key ${localKeyId(version)} is disabled`);
  return master;
}

function checkSignal(options: KeyringCallOptions | undefined): void {
  if (options?.signal?.aborted) {
    throw new BrokerError("deadline_exceeded", "key management call was cancelled", {
      cause: options.signal.reason,
    });
  }
}

/**
 * Opens the local keyring at `path`, creating it (file 0600 in a 0700 directory) with one
 * fresh master key if it does not exist. Refuses production and a file others can read.
 */
export async function loadOrCreateLocalKeyring(options: LocalKeyringOptions): Promise<Keyring> {
  const { path, nodeEnv } = options;
  if (nodeEnv === "production") {
    throw precondition("the local keyring is for development only; configure AWS KMS in production");
  }
  await createKeyringFileIfMissing(path);
  let state = await readMasterKeys(path);

  // Re-read when the file changed, so a rotation or disable done by the CLI in another
  // process takes effect here too, as it would with a real KMS.
  async function refresh(): Promise<MasterKeys> {
    if ((await keyringFileSignature(path)) !== state.signature) {
      const previous = state;
      state = await readMasterKeys(path);
      for (const master of previous.keys.values()) master.material.fill(0);
    }
    return state;
  }

  function unwrap(current: MasterKeys, stored: WrappedKey, context: EncryptionContext): UnwrappedDataKey {
    const { wrapped } = stored;
    const input = Buffer.from(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength);
    if (input.length !== WRAPPED_BYTES) throw integrityFailure("wrapped key has the wrong length");
    if (input.readUInt8(0) !== WRAP_FORMAT_V1) throw integrityFailure("unknown wrapped key format");
    const version = input.readUInt32BE(1);
    // As AWS KMS with KeyId (IncorrectKeyException): only the master key the row names (M2).
    if (localKeyVersion(stored.keyId) !== version) {
      throw integrityFailure("wrapped under another master key than the row names");
    }
    const master = current.keys.get(version);
    // A version missing from the file cannot be recovered: the data it wrapped is lost.
    if (master === undefined) throw integrityFailure("wrapped under an unknown master key version");
    if (master.disabled) throw precondition(`master key ${localKeyId(version)} is disabled`);

    const nonce = input.subarray(5, 5 + NONCE_BYTES);
    const body = input.subarray(5 + NONCE_BYTES, 5 + NONCE_BYTES + KEY_BYTES);
    const tag = input.subarray(WRAPPED_BYTES - TAG_BYTES);
    const plaintext = Buffer.alloc(KEY_BYTES);
    let unverified: Buffer | undefined;
    try {
      const decipher = createDecipheriv("aes-256-gcm", master.material, nonce, { authTagLength: TAG_BYTES });
      // The encryption context is the AAD: A's wrapped key under B's context fails (D37).
      decipher.setAAD(wrapAad(version, context));
      decipher.setAuthTag(tag);
      unverified = decipher.update(body);
      unverified.copy(plaintext);
      decipher.final();
      return { plaintext, keyId: localKeyId(version) };
    } catch (cause) {
      plaintext.fill(0);
      throw integrityFailure("wrapped key did not authenticate", cause);
    } finally {
      unverified?.fill(0);
    }
  }

  return {
    kind: "local",

    // As of the last load or operation: after addLocalKeyVersion in another process, the
    // next call (or a fresh load) picks the new version up.
    currentKeyId: () => localKeyId(state.current),

    async generateDataKey(context, callOptions): Promise<GeneratedDataKey> {
      checkSignal(callOptions);
      const current = await refresh();
      const master = usable(current.keys.get(current.current), current.current);
      const plaintext = randomFillSync(Buffer.alloc(KEY_BYTES));
      return { plaintext, wrapped: wrapUnder(master, plaintext, context), keyId: localKeyId(master.version) };
    },

    async decrypt(wrapped, context, callOptions) {
      checkSignal(callOptions);
      return unwrap(await refresh(), wrapped, context);
    },

    async reEncrypt(wrapped, context, destinationKeyId, callOptions): Promise<WrappedKey> {
      checkSignal(callOptions);
      const current = await refresh();
      const destinationVersion = localKeyVersion(destinationKeyId);
      if (destinationVersion === undefined)
        throw precondition("destination master key is not a local key id");
      const destination = usable(current.keys.get(destinationVersion), destinationVersion);
      const { plaintext } = unwrap(current, wrapped, context);
      try {
        return { wrapped: wrapUnder(destination, plaintext, context), keyId: localKeyId(destinationVersion) };
      } finally {
        plaintext.fill(0);
      }
    },
  };
}
