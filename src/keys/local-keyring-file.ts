import { randomBytes, randomFillSync } from "node:crypto";
import type { Stats } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { z } from "zod";
import { BrokerError } from "../errors.js";
import { localKeyId } from "./key-ids.js";

/**
 * The local keyring's file: versioned master keys in JSON. The file is the whole secret
 * (anyone who reads it and the database reads every key), so it is created 0600 in a 0700
 * directory, refused when group/world-accessible, and only ever replaced atomically.
 */

const FILE_FORMAT = "keybroker-local-keyring/v1";
/** Master key size: AES-256. */
const MASTER_KEY_BYTES = 32;

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

/** One master key version, decoded. */
export interface MasterKey {
  readonly version: number;
  readonly material: Buffer;
  readonly disabled: boolean;
}

/** The master keys as of one read of the file. */
export interface MasterKeys {
  readonly current: number;
  readonly keys: ReadonlyMap<number, MasterKey>;
  /** Identity of the file contents read (see `keyringFileSignature`). */
  readonly signature: string;
}

function precondition(message: string, cause?: unknown): BrokerError {
  return new BrokerError("failed_precondition", message, cause === undefined ? undefined : { cause });
}

function newMaterial(): string {
  const material = randomFillSync(Buffer.alloc(MASTER_KEY_BYTES));
  const encoded = material.toString("base64");
  material.fill(0);
  return encoded;
}

async function statKeyringFile(path: string): Promise<Stats> {
  try {
    return await stat(path);
  } catch (cause) {
    throw precondition(`local keyring file ${path} cannot be read`, cause);
  }
}

function signatureOf(info: Stats): string {
  return `${info.ino}:${info.size}:${info.mtimeMs}`;
}

/**
 * Identity of the file's current contents (inode, size, mtime), cheap enough to check on every
 * call: when it differs from `MasterKeys.signature`, another process rotated or disabled a key.
 */
export async function keyringFileSignature(path: string): Promise<string> {
  return signatureOf(await statKeyringFile(path));
}

async function readKeyringFile(path: string): Promise<{ file: KeyringFile; signature: string }> {
  const info = await statKeyringFile(path);
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
  return { file, signature: signatureOf(info) };
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

/** Reads and checks the keyring file (regular file, mode 0600, well-formed) and decodes its keys. */
export async function readMasterKeys(path: string): Promise<MasterKeys> {
  const { file, signature } = await readKeyringFile(path);
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

/** Creates the keyring file (0600, in a 0700 directory) with one fresh master key, unless it exists. */
export async function createKeyringFileIfMissing(path: string): Promise<void> {
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
