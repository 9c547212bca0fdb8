import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { open, type SecretBinding, seal } from "../../../src/crypto/envelope.js";
import { BrokerError } from "../../../src/errors.js";

const dataKey = randomBytes(32);
const binding: SecretBinding = {
  secretId: "0b6f3a52-8d0e-4c39-a0b7-9d7a2f1c5e11",
  userRef: randomBytes(32),
  provider: "binance",
  version: 3,
  part: "fields",
};
const plaintext = Buffer.from("api_key=AKIA-not-a-real-key-0123456789", "utf8");

function expectIntegrityFailure(act: () => unknown): void {
  let caught: unknown;
  try {
    act();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(BrokerError);
  expect((caught as BrokerError).code).toBe("data_loss");
  // One generic message for every failure: the caller learns nothing about which check failed.
  expect((caught as BrokerError).message).toBe("stored secret failed its integrity check");
}

describe("envelope seal/open", () => {
  it("opens what it sealed with the same key and binding", () => {
    const sealed = seal(dataKey, plaintext, binding);
    expect(open(dataKey, sealed, binding).equals(plaintext)).toBe(true);
    // As stored: PGlite hands bytea back as a plain Uint8Array, possibly a view into a larger buffer.
    const backing = new Uint8Array(sealed.length + 7);
    backing.set(sealed, 7);
    const view = backing.subarray(7);
    expect(open(dataKey, view, binding).equals(plaintext)).toBe(true);
  });

  it("D39 lays out format byte 0x01, a 12-byte nonce, the ciphertext and a 16-byte tag", () => {
    const sealed = seal(dataKey, plaintext, binding);
    expect(sealed[0]).toBe(0x01);
    expect(sealed.length).toBe(1 + 12 + plaintext.length + 16);
    expect(sealed.includes(plaintext)).toBe(false);
  });

  it("D39 uses a fresh nonce each time, so sealing the same value twice differs", () => {
    const a = seal(dataKey, plaintext, binding);
    const b = seal(dataKey, plaintext, binding);
    expect(a.subarray(1, 13).equals(b.subarray(1, 13))).toBe(false);
    expect(a.equals(b)).toBe(false);
  });

  it("round-trips an empty value", () => {
    expect(open(dataKey, seal(dataKey, Buffer.alloc(0), binding), binding).length).toBe(0);
  });

  it("D40 fails closed when any single byte is flipped: format, nonce, ciphertext or tag", () => {
    const sealed = seal(dataKey, plaintext, binding);
    for (let i = 0; i < sealed.length; i++) {
      const tampered = Buffer.from(sealed);
      tampered[i] = (tampered[i] ?? 0) ^ 0x01;
      expectIntegrityFailure(() => open(dataKey, tampered, binding));
    }
  });

  it("D40 fails closed on every truncation, including a missing tag and an empty value", () => {
    const sealed = seal(dataKey, plaintext, binding);
    for (let length = 0; length < sealed.length; length++) {
      expectIntegrityFailure(() => open(dataKey, sealed.subarray(0, length), binding));
    }
  });

  it("fails closed when bytes are appended", () => {
    const sealed = seal(dataKey, plaintext, binding);
    expectIntegrityFailure(() => open(dataKey, Buffer.concat([sealed, Buffer.of(0)]), binding));
  });

  it("D41 fails closed on an unknown format byte even if the rest is intact", () => {
    const sealed = seal(dataKey, plaintext, binding);
    for (const format of [0x00, 0x02, 0xff]) {
      const tampered = Buffer.from(sealed);
      tampered[0] = format;
      expectIntegrityFailure(() => open(dataKey, tampered, binding));
    }
  });

  it("fails closed with another data key", () => {
    const sealed = seal(dataKey, plaintext, binding);
    expectIntegrityFailure(() => open(randomBytes(32), sealed, binding));
  });

  const changedBindings: Array<[string, SecretBinding]> = [
    ["secret id", { ...binding, secretId: "0b6f3a52-8d0e-4c39-a0b7-9d7a2f1c5e12" }],
    ["user ref", { ...binding, userRef: randomBytes(32) }],
    ["provider", { ...binding, provider: "coinbase" }],
    ["version", { ...binding, version: 2 }],
    ["part", { ...binding, part: "hint" }],
  ];
  for (const [field, other] of changedBindings) {
    it(`fails closed when the ${field} in the binding differs`, () => {
      const sealed = seal(dataKey, plaintext, binding);
      expectIntegrityFailure(() => open(dataKey, sealed, other));
    });
  }

  it("does not confuse bindings whose fields only differ in where one ends and the next begins", () => {
    const a: SecretBinding = { ...binding, secretId: "ab", provider: "c" };
    const b: SecretBinding = { ...binding, secretId: "a", provider: "bc" };
    expectIntegrityFailure(() => open(dataKey, seal(dataKey, plaintext, a), b));
  });

  it("D36 detects two rows' ciphertexts swapped, even under one user's data key", () => {
    const rowA: SecretBinding = { ...binding, secretId: "row-a" };
    const rowB: SecretBinding = { ...binding, secretId: "row-b" };
    const sealedA = seal(dataKey, Buffer.from("value of A"), rowA);
    const sealedB = seal(dataKey, Buffer.from("value of B"), rowB);
    expectIntegrityFailure(() => open(dataKey, sealedB, rowA));
    expectIntegrityFailure(() => open(dataKey, sealedA, rowB));
  });

  it("D36 detects user A's ciphertext copied into user B's row, whatever key B's row uses", () => {
    const keyOfB = randomBytes(32);
    const rowOfB: SecretBinding = { ...binding, userRef: randomBytes(32) };
    const sealedForA = seal(dataKey, plaintext, binding);
    expectIntegrityFailure(() => open(keyOfB, sealedForA, rowOfB));
    expectIntegrityFailure(() => open(dataKey, sealedForA, rowOfB));
  });

  it("keeps the plaintext, the key and the cause's details out of the error message", () => {
    const sealed = seal(dataKey, plaintext, binding);
    const tampered = Buffer.from(sealed);
    tampered[20] = (tampered[20] ?? 0) ^ 0xff;
    try {
      open(dataKey, tampered, binding);
      expect.unreachable("open should have thrown");
    } catch (err) {
      const shown = `${String(err)} ${JSON.stringify(err)}`;
      expect(shown).not.toContain(plaintext.toString("utf8"));
      expect(shown).not.toContain(dataKey.toString("hex"));
      expect(shown).not.toContain(dataKey.toString("base64"));
      expect(shown).not.toContain(binding.userRef.toString("hex"));
      expect((err as BrokerError).cause).toBeDefined();
    }
  });

  it("refuses a data key that is not 32 bytes", () => {
    expect(() => seal(randomBytes(16), plaintext, binding)).toThrow(BrokerError);
    expect(() => open(randomBytes(16), seal(dataKey, plaintext, binding), binding)).toThrow(BrokerError);
  });

  it("refuses a negative or fractional version in the binding", () => {
    expect(() => seal(dataKey, plaintext, { ...binding, version: -1 })).toThrow(BrokerError);
    expect(() => seal(dataKey, plaintext, { ...binding, version: 1.5 })).toThrow(BrokerError);
  });
});
