import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import { localKeyId, localKeyVersion } from "./key-ids.js";
import { createKeyringFileIfMissing, readMasterKeys } from "./local-keyring-file.js";
import type { MacKey } from "./mac-key.js";

// Domain separation: the derived key is used for checkpoint MACs and nothing else.
const HKDF_INFO = "keybroker/audit-checkpoint-mac/v1";
const MAC_KEY_BYTES = 32;

/**
 * DEVELOPMENT ONLY, as the local keyring it derives from: one HMAC key per master key version,
 * HKDF-SHA-256 of that version's material. New MACs use the current version; any version still
 * in the file verifies. The caller refuses it in production (no relaxation, no local keyring).
 */
export async function openLocalMacKey(path: string): Promise<MacKey> {
  await createKeyringFileIfMissing(path);
  const masters = await readMasterKeys(path);
  const derived = new Map<number, Buffer>();
  for (const master of masters.keys.values()) {
    derived.set(
      master.version,
      Buffer.from(hkdfSync("sha256", master.material, Buffer.alloc(0), HKDF_INFO, MAC_KEY_BYTES)),
    );
    master.material.fill(0);
  }
  const mac = (key: Buffer, message: Uint8Array): Buffer =>
    createHmac("sha256", key).update(message).digest();
  const current = derived.get(masters.current);
  if (current === undefined) throw new Error("the local keyring has no current master key");

  return {
    keyId: localKeyId(masters.current),
    async generateMac(message) {
      return mac(current, message);
    },
    async verifyMac(message, candidate, keyId) {
      const version = localKeyVersion(keyId);
      const key = version === undefined ? undefined : derived.get(version);
      if (key === undefined) return false;
      const expected = mac(key, message);
      return expected.length === candidate.byteLength && timingSafeEqual(expected, candidate);
    },
    close() {
      for (const key of derived.values()) key.fill(0);
    },
  };
}
