import { randomBytes } from "node:crypto";
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { EncryptionContext } from "../../../src/keys/keyring.js";
import { loadOrCreateLocalKeyring } from "../../../src/keys/local-keyring.js";
import { addLocalKeyVersion, disableLocalKeyVersion } from "../../../src/keys/local-keyring-file.js";
import { brokerErrorOf } from "../../support/broker-errors.js";

const contextA: EncryptionContext = {
  purpose: "keybroker:user-data-key",
  user_ref: randomBytes(32).toString("hex"),
};
const contextB: EncryptionContext = {
  purpose: "keybroker:user-data-key",
  user_ref: randomBytes(32).toString("hex"),
};

let dir: string;
let path: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "keybroker-keyring-"));
  path = join(dir, "keys", "local-keyring.json");
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("local keyring", () => {
  it("creates the keyring file with mode 0600 in a 0700 directory", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, "keys"))).mode & 0o777).toBe(0o700);
    expect(keyring.kind).toBe("local");
    expect(keyring.currentKeyId()).toBe("local:1");
    const file = JSON.parse(await readFile(path, "utf8"));
    expect(file.format).toBe("keybroker-local-keyring/v1");
    expect(Buffer.from(file.keys[0].material, "base64")).toHaveLength(32);
  });

  it("opens an existing file with the same keys, so data keys survive a restart", async () => {
    const first = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const generated = await first.generateDataKey(contextA);
    const second = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const unwrapped = await second.decrypt(generated, contextA);
    expect(unwrapped.plaintext.equals(generated.plaintext)).toBe(true);
    expect(unwrapped.keyId).toBe("local:1");
  });

  it("refuses to run in production", async () => {
    const err = await brokerErrorOf(loadOrCreateLocalKeyring({ path, nodeEnv: "production" }));
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toMatch(/development only/);
  });

  it("refuses a keyring file readable by group or others", async () => {
    await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    await chmod(path, 0o644);
    const err = await brokerErrorOf(loadOrCreateLocalKeyring({ path, nodeEnv: "development" }));
    expect(err.code).toBe("failed_precondition");
    expect(err.message).toMatch(/chmod 600/);
  });

  it("refuses a malformed keyring file", async () => {
    const malformed = join(dir, "malformed.json");
    await writeFile(malformed, '{"format":"other"}', { mode: 0o600 });
    const err = await brokerErrorOf(loadOrCreateLocalKeyring({ path: malformed, nodeEnv: "development" }));
    expect(err.code).toBe("failed_precondition");
  });

  it("generates a 32-byte data key and unwraps it with the same context", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const generated = await keyring.generateDataKey(contextA);
    expect(generated.plaintext).toHaveLength(32);
    expect(generated.keyId).toBe("local:1");
    expect(Buffer.from(generated.wrapped).includes(generated.plaintext)).toBe(false);
    const unwrapped = await keyring.decrypt(generated, contextA);
    expect(unwrapped.plaintext.equals(generated.plaintext)).toBe(true);
  });

  it("reports data_loss when a wrapped key is used under another user's context", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const generated = await keyring.generateDataKey(contextA);
    const err = await brokerErrorOf(keyring.decrypt(generated, contextB));
    expect(err.code).toBe("data_loss");
    const extraEntry = await brokerErrorOf(keyring.decrypt(generated, { ...contextA, extra: "x" }));
    expect(extraEntry.code).toBe("data_loss");
  });

  it("reports data_loss for any flipped byte or truncation of a wrapped key", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const { wrapped } = await keyring.generateDataKey(contextA);
    for (let i = 0; i < wrapped.length; i++) {
      const tampered = Buffer.from(wrapped);
      tampered[i] = (tampered[i] ?? 0) ^ 0x01;
      expect(
        (await brokerErrorOf(keyring.decrypt({ wrapped: tampered, keyId: "local:1" }, contextA))).code,
      ).toBe("data_loss");
    }
    expect(
      (await brokerErrorOf(keyring.decrypt({ wrapped: wrapped.subarray(0, 40), keyId: "local:1" }, contextA)))
        .code,
    ).toBe("data_loss");
  });

  it("M2 refuses a wrapped key whose row names another master key version", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const old = await keyring.generateDataKey(contextA);
    await addLocalKeyVersion(path);

    const err = await brokerErrorOf(keyring.decrypt({ wrapped: old.wrapped, keyId: "local:2" }, contextA));
    const rewrap = await brokerErrorOf(
      keyring.reEncrypt({ wrapped: old.wrapped, keyId: "local:2" }, contextA, "local:2"),
    );

    expect(err.code).toBe("data_loss");
    expect(rewrap.code).toBe("data_loss");
  });

  it("wraps new data keys under a new version while rows under the old one still unwrap", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const old = await keyring.generateDataKey(contextA);
    expect(await addLocalKeyVersion(path)).toBe(2);
    expect((await stat(path)).mode & 0o777).toBe(0o600);

    const fresh = await keyring.generateDataKey(contextB);
    expect(fresh.keyId).toBe("local:2");
    expect(keyring.currentKeyId()).toBe("local:2");
    const unwrappedOld = await keyring.decrypt(old, contextA);
    expect(unwrappedOld.plaintext.equals(old.plaintext)).toBe(true);
    expect(unwrappedOld.keyId).toBe("local:1");
  });

  it("re-wraps a data key under the destination version, keeping its plaintext and context", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const old = await keyring.generateDataKey(contextA);
    await addLocalKeyVersion(path);
    const rewrapped = await keyring.reEncrypt(old, contextA, "local:2");
    expect(rewrapped.keyId).toBe("local:2");
    expect(Buffer.from(rewrapped.wrapped).equals(Buffer.from(old.wrapped))).toBe(false);
    const unwrapped = await keyring.decrypt(rewrapped, contextA);
    expect(unwrapped.keyId).toBe("local:2");
    expect(unwrapped.plaintext.equals(old.plaintext)).toBe(true);
    expect((await brokerErrorOf(keyring.decrypt(rewrapped, contextB))).code).toBe("data_loss");
  });

  it("refuses to re-wrap under a version that does not exist", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const wrapped = await keyring.generateDataKey(contextA);
    expect((await brokerErrorOf(keyring.reEncrypt(wrapped, contextA, "local:9"))).code).toBe(
      "failed_precondition",
    );
    expect((await brokerErrorOf(keyring.reEncrypt(wrapped, contextA, "arn:aws:kms:x"))).code).toBe(
      "failed_precondition",
    );
  });

  it("reports failed_precondition for a data key wrapped under a disabled version", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const old = await keyring.generateDataKey(contextA);
    await addLocalKeyVersion(path);
    await disableLocalKeyVersion(path, 1);
    const err = await brokerErrorOf(keyring.decrypt(old, contextA));
    expect(err.code).toBe("failed_precondition");
    expect((await brokerErrorOf(keyring.reEncrypt(old, contextA, "local:2"))).code).toBe(
      "failed_precondition",
    );
  });

  it("refuses to disable the current version, or one that does not exist", async () => {
    await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    expect((await brokerErrorOf(disableLocalKeyVersion(path, 1))).code).toBe("failed_precondition");
    expect((await brokerErrorOf(disableLocalKeyVersion(path, 7))).code).toBe("not_found");
  });

  it("reports deadline_exceeded for an already-aborted call", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const err = await brokerErrorOf(keyring.generateDataKey(contextA, { signal: AbortSignal.abort() }));
    expect(err.code).toBe("deadline_exceeded");
  });

  it("keeps key material and the context's user ref out of every error message", async () => {
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "development" });
    const generated = await keyring.generateDataKey(contextA);
    const file = JSON.parse(await readFile(path, "utf8"));
    const err = await brokerErrorOf(keyring.decrypt(generated, contextB));
    const shown = `${err.message} ${String(err)} ${JSON.stringify(err)}`;
    for (const secret of [
      file.keys[0].material,
      generated.plaintext.toString("hex"),
      generated.plaintext.toString("base64"),
      contextA.user_ref,
      contextB.user_ref,
    ]) {
      expect(shown).not.toContain(secret);
    }
  });
});
