import { createHash, randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { chainHash, GENESIS_HASH } from "../../../src/audit/audit-chain.js";
import { encodeAuditEntry } from "../../../src/audit/audit-encoding.js";
import type { AuditEntry } from "../../../src/audit/audit-entry.js";

const entry = (overrides: Partial<AuditEntry> = {}): AuditEntry => ({
  occurredAt: new Date("2025-01-02T03:04:05.678Z"),
  requestId: "req-1",
  callerKeyId: "ck_0011223344556677",
  userRef: Buffer.alloc(32, 7),
  action: "secret.put",
  target: "secret-1",
  outcome: "ok",
  code: null,
  detail: { provider: "binance", fieldCount: 2 },
  ...overrides,
});

describe("encodeAuditEntry", () => {
  it("does not confuse text split differently between two columns", () => {
    const a = encodeAuditEntry(1, entry({ target: "ab", code: "c" }));
    const b = encodeAuditEntry(1, entry({ target: "a", code: "bc" }));
    expect(a.equals(b)).toBe(false);
  });

  it("tells null apart from an empty string", () => {
    expect(
      encodeAuditEntry(1, entry({ target: null })).equals(encodeAuditEntry(1, entry({ target: "" }))),
    ).toBe(false);
    expect(
      encodeAuditEntry(1, entry({ userRef: null })).equals(encodeAuditEntry(1, entry({ callerKeyId: null }))),
    ).toBe(false);
  });

  it("tells the string '2' apart from the number 2 in detail", () => {
    const text = encodeAuditEntry(1, entry({ detail: { fieldCount: "2" } }));
    const number = encodeAuditEntry(1, entry({ detail: { fieldCount: 2 } }));
    expect(text.equals(number)).toBe(false);
  });

  it("ignores detail key order, which jsonb does not keep", () => {
    const a = encodeAuditEntry(1, entry({ detail: { provider: "x", method: "GET" } }));
    const b = encodeAuditEntry(1, entry({ detail: { method: "GET", provider: "x" } }));
    expect(a.equals(b)).toBe(true);
  });

  it("ignores key order for keys outside printable ASCII too (control, astral, CJK), as in a tampered row", () => {
    const keys = ["\u0001", "\uff61", "\u{1f600}", "a"];
    const encode = (order: string[]) =>
      encodeAuditEntry(1, entry({ detail: Object.fromEntries(order.map((k) => [k, "v"])) }));
    expect(encode(keys).equals(encode([...keys].reverse()))).toBe(true);
    expect(encode(keys).equals(encode(["a", "\uff61", "\u0001", "\u{1f600}"]))).toBe(true);
  });

  it("cannot be forged by a detail value that embeds a second key", () => {
    const forged = encodeAuditEntry(1, entry({ detail: { provider: 'x","method":"DELETE' } }));
    const honest = encodeAuditEntry(1, entry({ detail: { provider: "x", method: "DELETE" } }));
    expect(forged.equals(honest)).toBe(false);
  });

  it("binds seq and time", () => {
    expect(encodeAuditEntry(1, entry()).equals(encodeAuditEntry(2, entry()))).toBe(false);
    const later = entry({ occurredAt: new Date("2025-01-02T03:04:05.679Z") });
    expect(encodeAuditEntry(1, entry()).equals(encodeAuditEntry(1, later))).toBe(false);
  });

  it("encodes tampered, non-map detail distinctly from any map", () => {
    const asArray = encodeAuditEntry(1, entry({ detail: ["provider", "binance"] }));
    const asMap = encodeAuditEntry(1, entry({ detail: { provider: "binance" } }));
    expect(asArray.equals(asMap)).toBe(false);
  });
});

describe("chainHash", () => {
  it("is SHA-256 over the previous hash and the row's canonical encoding", () => {
    const prev = randomBytes(32);
    const expected = createHash("sha256")
      .update(Buffer.concat([prev, encodeAuditEntry(5, entry())]))
      .digest();
    expect(chainHash(prev, 5, entry()).equals(expected)).toBe(true);
  });

  it("starts from 32 zero bytes and depends on the previous hash", () => {
    expect(GENESIS_HASH.equals(Buffer.alloc(32))).toBe(true);
    const first = chainHash(GENESIS_HASH, 1, entry());
    expect(chainHash(randomBytes(32), 1, entry()).equals(first)).toBe(false);
  });
});
