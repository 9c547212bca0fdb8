import { createCipheriv, createDecipheriv, randomBytes, randomFillSync } from "node:crypto";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
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

/**
 * DEVELOPMENT ONLY. Master keys in a local JSON file stand in for a KMS so the broker runs
 * with no cloud account. The file is the whole secret (anyone who reads it and the database
 * reads every key), so it is created 0600, refused when group/world-accessible, and refused
 * outright in production, where the KMS key policy — not a file — must grant decrypt (T4).
 */

const FILE_FORMAT = "keybroker-local-keyring/v1";
const WRAP_FORMAT_V1 = 0x01;
const AAD_LABEL = "keybroker/local-keyring-wrap/v1";
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
// [format][u32 master key version][nonce][wrapped 32-byte key][tag]
const WRAPPED_BYTES = 1 + 4 + NONCE_BYTES + KEY_BYTES + TAG_BYTES;

const keyringFileSchema = z.object({
  format: z.literal(FILE_FORMAT),
  current: z.number().int().positive(),
  keys: z
    .array(
      z.object({
        version: z.number().int().positive(),
        material: z.string().regex(/^[A-Za-z0-9+/]{43}=$/, "32 bytes of base64"),
        createdAt: z.string(),
        disabled: z.boolean(),
      }),
    )
    .min(1),
});
type KeyringFile = z.infer<typeof keyringFileSchema>;

interface MasterKey {
  readonly version: number;
  readonly material: Buffer;
  readonly disabled: boolean;
}

interface LoadedState {
  readonly current: number;
  readonly keys: ReadonlyMap<number, MasterKey>;
  /** Identity of the file contents loaded, to notice another process's rotation. */
  readonly signature: string;
}

export interface LocalKeyringOptions {
  readonly path: string;
  readonly nodeEnv: string | undefined;
}

function precondition(message: string, cause?: unknown): BrokerError {
  return new BrokerError("failed_precondition", message, cause === undefined ? undefined : { cause });
}

function newMaterial(): string {
  const material = randomFillSync(Buffer.alloc(KEY_BYTES));
  const encoded = material.toString("base64");
  material.fill(0);
  return encoded;
}

async function readKeyringFile(path: string): Promise<{ file: KeyringFile; signature: string }> {
  let info: Awaited<ReturnType<typeof stat>>;
  try {
    info = await stat(path);
  } catch (cause) {
    throw precondition(`local keyring file ${path} cannot be read`, cause);
  }
  if (!info.isFile()) throw precondition(`local keyring ${path} is not a regular file`);
  // Permission bits mean nothing on Windows; everywhere else, a readable keyring is a leaked keyring.
  if (process.platform !== "win32" && (info.mode & 0o077) !== 0) {
    const mode = (info.mode & 0o777).toString(8).padStart(4, "0");
    throw precondition(
      `local keyring file ${path} is accessible by group or others (mode ${mode}); run chmod 600 on it`,
    );
  }
  let file: KeyringFile;
  try {
    file = keyringFileSchema.parse(JSON.parse(await readFile(path, "utf8")));
  } catch (cause) {
    throw precondition(`local keyring file ${path} is not a valid ${FILE_FORMAT} file`, cause);
  }
  const versions = new Set(file.keys.map((k) => k.version));
  if (versions.size !== file.keys.length || !versions.has(file.current)) {
    throw precondition(`local keyring file ${path} has duplicate versions or no current version`);
  }
  return { file, signature: `${info.ino}:${info.size}:${info.mtimeMs}` };
}

/** Writes atomically (temp file + rename), so a crash never leaves a half-written keyring. */
async function writeKeyringFile(path: string, file: KeyringFile): Promise<void> {
  const temp = `${path}.${randomBytes(6).toString("hex")}.tmp`;
  try {
    await writeFile(temp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: "wx" });
    await rename(temp, path);
  } catch (cause) {
    await rm(temp, { force: true });
    throw precondition(`local keyring file ${path} cannot be written`, cause);
  }
}

function toState(file: KeyringFile, signature: string): LoadedState {
  const keys = new Map<number, MasterKey>();
  for (const k of file.keys) {
    keys.set(k.version, {
      version: k.version,
      material: Buffer.from(k.material, "base64"),
      disabled: k.disabled,
    });
  }
  return { current: file.current, keys, signature };
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
  await createIfMissing(path);
  let state = await load(path);

  async function load(at: string): Promise<LoadedState> {
    const { file, signature } = await readKeyringFile(at);
    return toState(file, signature);
  }

  // Re-read when the file changed, so a rotation or disable done by the CLI in another
  // process takes effect here too, as it would with a real KMS.
  async function refresh(): Promise<LoadedState> {
    let info: Awaited<ReturnType<typeof stat>>;
    try {
      info = await stat(path);
    } catch (cause) {
      throw precondition(`local keyring file ${path} cannot be read`, cause);
    }
    if (`${info.ino}:${info.size}:${info.mtimeMs}` !== state.signature) {
      const previous = state;
      state = await load(path);
      for (const master of previous.keys.values()) master.material.fill(0);
    }
    return state;
  }

  function unwrap(current: LoadedState, wrapped: Uint8Array, context: EncryptionContext): UnwrappedDataKey {
    const input = Buffer.from(wrapped.buffer, wrapped.byteOffset, wrapped.byteLength);
    if (input.length !== WRAPPED_BYTES) throw integrityFailure("wrapped key has the wrong length");
    if (input.readUInt8(0) !== WRAP_FORMAT_V1) throw integrityFailure("unknown wrapped key format");
    const version = input.readUInt32BE(1);
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

async function createIfMissing(path: string): Promise<void> {
  try {
    await stat(path);
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") {
      throw precondition(`local keyring file ${path} cannot be read`, err);
    }
  }
  const file: KeyringFile = {
    format: FILE_FORMAT,
    current: 1,
    keys: [{ version: 1, material: newMaterial(), createdAt: new Date().toISOString(), disabled: false }],
  };
  try {
    // mode applies only to directories created here: never chmod an existing parent like /tmp.
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    // "wx": if another process created it meanwhile, keep theirs rather than overwrite it.
    await writeFile(path, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600, flag: "wx" });
  } catch (cause) {
    if ((cause as NodeJS.ErrnoException).code === "EEXIST") return;
    throw precondition(`local keyring file ${path} cannot be created`, cause);
  }
}

/** Adds a fresh master key version and makes it current (rotation); returns its version. */
export async function addLocalKeyVersion(path: string): Promise<number> {
  const { file } = await readKeyringFile(path);
  const version = Math.max(...file.keys.map((k) => k.version)) + 1;
  file.keys.push({ version, material: newMaterial(), createdAt: new Date().toISOString(), disabled: false });
  file.current = version;
  await writeKeyringFile(path, file);
  return version;
}

/** Disables a retired master key version: data keys still wrapped under it stop unwrapping. */
export async function disableLocalKeyVersion(path: string, version: number): Promise<void> {
  const { file } = await readKeyringFile(path);
  const key = file.keys.find((k) => k.version === version);
  if (key === undefined)
    throw new BrokerError("not_found", `master key ${localKeyId(version)} does not exist`);
  if (version === file.current) {
    throw precondition("the current master key version cannot be disabled; add a new version first");
  }
  key.disabled = true;
  await writeKeyringFile(path, file);
}
