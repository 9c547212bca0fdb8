import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { open, type SecretBinding, seal } from "../../../src/crypto/envelope.js";
import { HEAD_MAC_BYTES, headMac, type SecretHead, verifyHead } from "../../../src/crypto/secret-head.js";
import { brokerErrorThrownBy } from "../../support/broker-errors.js";

const dataKey = randomBytes(32);
const head: SecretHead = {
  secretId: "0b6f3a52-8d0e-4c39-a0b7-9d7a2f1c5e11",
  userRef: randomBytes(32),
  provider: "binance",
  version: 2,
};
const INTEGRITY_MESSAGE = "stored secret failed its integrity check";

function expectRefused(act: () => unknown): void {
  const err = brokerErrorThrownBy(act);
  expect([err.code, err.message]).toEqual(["data_loss", INTEGRITY_MESSAGE]);
}

describe("secret head (catalogue L1)", () => {
  it("L1 verifies the head it made for the current version", () => {
    const mac = headMac(dataKey, head);
    expect(mac).toHaveLength(HEAD_MAC_BYTES);
    expect(() => verifyHead(dataKey, mac, head)).not.toThrow();
    // Deterministic: the same pointer under the same key always gets the same head.
    expect(headMac(dataKey, head).equals(mac)).toBe(true);
  });

  it.each([
    ["an older version (the pointer rolled back)", { version: 1 }],
    ["a newer version", { version: 3 }],
    ["another secret (a head copied from another row)", { secretId: "0b6f3a52-8d0e-4c39-a0b7-9d7a2f1c5e12" }],
    ["another user", { userRef: randomBytes(32) }],
    ["another provider", { provider: "kraken" }],
  ])("L1 refuses a head for %s with the generic data_loss", (_case, change) => {
    const mac = headMac(dataKey, head);
    expectRefused(() => verifyHead(dataKey, mac, { ...head, ...change }));
  });

  it("L1 refuses a head made under another data key, a flipped byte, a truncated or an empty head", () => {
    const mac = headMac(dataKey, head);
    expectRefused(() => verifyHead(randomBytes(32), mac, head));
    const flipped = Buffer.from(mac);
    flipped[0] = (flipped[0] ?? 0) ^ 0x01;
    expectRefused(() => verifyHead(dataKey, flipped, head));
    expectRefused(() => verifyHead(dataKey, mac.subarray(0, 16), head));
    expectRefused(() => verifyHead(dataKey, new Uint8Array(0), head));
  });
});

describe("head-bound envelopes (catalogue L1)", () => {
  const binding: SecretBinding = { ...head, part: "fields" };
  const plaintext = Buffer.from("api_key=AKIA-not-a-real-key-0123456789", "utf8");

  it("L1 a value sealed for a bound secret does not open as an unbound (legacy) one, nor the reverse", () => {
    const bound = seal(dataKey, plaintext, { ...binding, headBound: true });
    const legacy = seal(dataKey, plaintext, binding);
    expect(open(dataKey, bound, { ...binding, headBound: true }).equals(plaintext)).toBe(true);
    expect(open(dataKey, legacy, binding).equals(plaintext)).toBe(true);
    expect(open(dataKey, legacy, { ...binding, headBound: false }).equals(plaintext)).toBe(true);
    // Clearing a secret's head must not pass its bound versions off as legacy ones.
    expectRefused(() => open(dataKey, bound, binding));
    expectRefused(() => open(dataKey, legacy, { ...binding, headBound: true }));
  });
});

describe("grant-bound heads (SPEC I10)", () => {
  it("H92 binds the grant: a widened, narrowed or cleared grant fails, its order does not matter", () => {
    const granted = { ...head, grant: ["read", "trade"] };
    const mac = headMac(dataKey, granted);
    expect(() => verifyHead(dataKey, mac, { ...head, grant: ["trade", "read"] })).not.toThrow();
    expectRefused(() => verifyHead(dataKey, mac, { ...head, grant: ["read", "trade", "transfer"] }));
    expectRefused(() => verifyHead(dataKey, mac, { ...head, grant: ["read"] }));
    expectRefused(() => verifyHead(dataKey, mac, head));
    // And a pre-grant head cannot be passed off as one with a grant.
    expectRefused(() => verifyHead(dataKey, headMac(dataKey, head), { ...head, grant: [] }));
  });
});
