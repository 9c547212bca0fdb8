import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { addLocalKeyVersion } from "../../../src/keys/local-keyring-file.js";
import { openLocalMacKey } from "../../../src/keys/local-mac-key.js";

describe("the local keyring's checkpoint MAC key (development)", () => {
  let dir: string;
  let file: string;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-local-mac-"));
    file = join(dir, "keyring.json");
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("G59 verifies its own MACs only: not another message, a flipped byte, or an unknown key version", async () => {
    const key = await openLocalMacKey(file);
    const message = Buffer.from("checkpoint 42");
    const mac = await key.generateMac(message);
    expect(key.keyId).toBe("local:1");
    expect(await key.verifyMac(message, mac, "local:1")).toBe(true);
    expect(await key.verifyMac(Buffer.from("checkpoint 43"), mac, "local:1")).toBe(false);
    const flipped = Buffer.from(mac);
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    expect(await key.verifyMac(message, flipped, "local:1")).toBe(false);
    expect(await key.verifyMac(message, mac.subarray(1), "local:1")).toBe(false);
    expect(await key.verifyMac(message, mac, "local:2")).toBe(false);
    expect(await key.verifyMac(message, mac, "arn:aws:kms:eu-west-1:111122223333:key/x")).toBe(false);
    key.close();
  });

  it("G59 signs with the current version after a rotation and still verifies MACs of older versions", async () => {
    const before = await openLocalMacKey(file);
    const message = Buffer.from("checkpoint 7");
    const old = await before.generateMac(message);
    before.close();
    await addLocalKeyVersion(file);

    const after = await openLocalMacKey(file);
    expect(after.keyId).toBe("local:2");
    const fresh = await after.generateMac(message);
    expect(fresh.equals(old)).toBe(false);
    expect(await after.verifyMac(message, old, "local:1")).toBe(true);
    expect(await after.verifyMac(message, fresh, "local:2")).toBe(true);
    expect(await after.verifyMac(message, old, "local:2")).toBe(false);
    after.close();
  });
});
