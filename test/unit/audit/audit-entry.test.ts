import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  DROPPED,
  escapeAuditText,
  looksLikeCredential,
  sanitizeAuditDetail,
  toAuditEntry,
} from "../../../src/audit/audit-entry.js";
import type { AuditDetail, AuditEvent } from "../../../src/audit/audit-event.js";
import { BrokerError } from "../../../src/errors.js";

const CANARY_SECRET = "CANARYsecret9876543210zyxwvutsrqpo";
const CANARY_JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl";
const CANARY_CALLER_KEY = "kbk_AbCdEfGhIjKlMnOpQrStUvWxYz012345abcdef";
const at = new Date("2025-01-02T03:04:05.678Z");

const event = (overrides: Partial<AuditEvent> = {}): AuditEvent => ({
  requestId: "5b0e8f0c-6a43-4d8e-9a43-0f1d2c3b4a59",
  action: "proxy.call",
  outcome: "ok",
  ...overrides,
});

describe("escapeAuditText", () => {
  it("turns newlines and other control characters into visible escapes, so text stays on one line", () => {
    const escaped = escapeAuditText('label\n{"seq":2,"action":"secret.delete"}\r\u0000\u001b[31m', 200);
    expect(escaped).toBe('label\\u000a{"seq":2,"action":"secret.delete"}\\u000d\\u0000\\u001b[31m');
  });

  it("escapes unicode line separators, NEL and bidi overrides", () => {
    const escaped = escapeAuditText("a\u2028b\u0085c\u202ed\u2066e\ufeff", 200);
    expect(escaped).toBe("a\\u2028b\\u0085c\\u202ed\\u2066e\\ufeff");
  });

  it("doubles backslashes, so a literal '\\u000a' typed by a caller stays distinct from an escaped newline", () => {
    expect(escapeAuditText("\\u000a", 50)).toBe("\\\\u000a");
    expect(escapeAuditText("\\u000a", 50)).not.toBe(escapeAuditText("\n", 50));
  });

  it("caps length on a code point boundary and marks the cut", () => {
    const capped = escapeAuditText(`${"x".repeat(9)}😀😀`, 11);
    expect(capped).toBe(`${"x".repeat(9)}…`);
    expect(escapeAuditText("y".repeat(500), 20)).toHaveLength(20);
  });

  it("replaces lone surrogates, which Postgres text cannot hold", () => {
    expect(escapeAuditText("a\ud800b", 10)).toBe("a\ufffdb");
  });
});

describe("looksLikeCredential", () => {
  it("flags API keys, JWTs and broker caller keys", () => {
    expect(looksLikeCredential(CANARY_SECRET)).toBe(true);
    expect(looksLikeCredential(CANARY_JWT)).toBe(true);
    expect(looksLikeCredential(CANARY_CALLER_KEY)).toBe(true);
    expect(looksLikeCredential(`/api/v3/order?signature=${CANARY_SECRET}`)).toBe(true);
  });

  it("passes ids the broker itself puts in audit rows", () => {
    expect(looksLikeCredential("5b0e8f0c-6a43-4d8e-9a43-0f1d2c3b4a59")).toBe(false);
    expect(looksLikeCredential(`ck_${randomBytes(8).toString("hex")}`)).toBe(false);
    expect(
      looksLikeCredential("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
    ).toBe(false);
    expect(looksLikeCredential("/api/v3/openOrders/{symbol}")).toBe(false);
  });
});

describe("sanitizeAuditDetail", () => {
  it("keeps allowlisted keys whose values fit their shape", () => {
    const detail: AuditDetail = {
      provider: "binance",
      method: "POST",
      pathTemplate: "/api/v3/order/{orderId}",
      upstreamStatus: 201,
      durationMs: 42,
      scope: "proxy:call",
      masterKeyId: "local:v2",
    };
    expect(sanitizeAuditDetail(detail)).toEqual(detail);
  });

  it("drops a canary secret or token passed by mistake in a value, keeping only a marker", () => {
    const sanitized = sanitizeAuditDetail({
      provider: CANARY_SECRET,
      reason: CANARY_JWT,
      pathTemplate: `/v1/keys/${CANARY_SECRET}`,
      masterKeyId: CANARY_CALLER_KEY,
    });
    expect(sanitized).toEqual({
      provider: DROPPED,
      reason: DROPPED,
      pathTemplate: DROPPED,
      masterKeyId: DROPPED,
    });
    expect(JSON.stringify(sanitized)).not.toContain("CANARY");
  });

  it("drops keys outside the allowlist even when a cast slips them past the type", () => {
    const smuggled = {
      provider: "binance",
      body: CANARY_SECRET,
      authorization: "Bearer x",
    } as unknown as AuditDetail;
    expect(sanitizeAuditDetail(smuggled)).toEqual({ provider: "binance" });
  });

  it("refuses concrete paths with queries, labels with spaces or controls, and non-integer numbers", () => {
    const sanitized = sanitizeAuditDetail({
      pathTemplate: "/api/v3/order?symbol=BTCUSDT",
      method: "post\n",
      provider: "My Binance label",
      upstreamStatus: 42,
      durationMs: Number.NaN,
      count: 1.5,
    });
    expect(Object.values(sanitized).every((v) => v === DROPPED)).toBe(true);
    expect(Object.keys(sanitized)).toHaveLength(6);
  });
});

describe("toAuditEntry", () => {
  it("stamps the time and escapes caller-influenced text in target and ids", () => {
    const entry = toAuditEntry(
      event({ target: "id\nseq=2 action=secret.delete", callerKeyId: "ck_1\r" }),
      at,
    );
    expect(entry.occurredAt).toBe(at);
    expect(entry.target).toBe("id\\u000aseq=2 action=secret.delete");
    expect(entry.callerKeyId).toBe("ck_1\\u000d");
  });

  it("stores a credential-shaped target as a marker, never verbatim", () => {
    expect(toAuditEntry(event({ target: CANARY_CALLER_KEY }), at).target).toBe(DROPPED);
  });

  it("keeps a 32-byte user ref and refuses anything else, which could be a raw user id", () => {
    const ref = randomBytes(32);
    expect(toAuditEntry(event({ userRef: ref }), at).userRef?.equals(ref)).toBe(true);
    expect(() => toAuditEntry(event({ userRef: Buffer.from("google-oauth2|alice") }), at)).toThrow(
      BrokerError,
    );
  });

  it("refuses actions, outcomes and codes that untyped code made up", () => {
    const bad = [
      { action: "proxy.call\nsecret.delete" },
      { outcome: "fine" },
      { code: "Permission Denied" },
    ] as unknown as Partial<AuditEvent>[];
    for (const override of bad) {
      expect(() => toAuditEntry(event(override), at)).toThrow(BrokerError);
    }
  });

  it("refuses an invalid clock reading", () => {
    expect(() => toAuditEntry(event(), new Date(Number.NaN))).toThrow(BrokerError);
  });
});
