import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { chainHash } from "../../src/audit/audit-chain.js";
import { encodeAuditEntry } from "../../src/audit/audit-encoding.js";
import { toAuditEntry } from "../../src/audit/audit-entry.js";
import type { AuditEvent } from "../../src/audit/audit-event.js";
import { open, type SecretBinding } from "../../src/crypto/envelope.js";
import { decodeFields, encodeFields } from "../../src/crypto/field-codec.js";
import { headMac, verifyHead } from "../../src/crypto/secret-head.js";
import { loadOrCreateLocalKeyring } from "../../src/keys/local-keyring.js";
import {
  deriveFingerprintKey,
  deriveUserRef,
  fingerprintFields,
  maskedHint,
} from "../../src/keys/user-ref.js";
import golden from "../fixtures/golden-vectors.json" with { type: "json" };

/**
 * Catalogue W4: every format the broker stores is pinned by vectors committed once, from the
 * code that wrote real rows. A change to a label, a length prefix or a field order passes every
 * round-trip test but would leave every existing row unreadable (or every audit row "tampered")
 * after an upgrade; these tests fail instead. Never regenerate the fixture to make them pass.
 */

const bytes = (hex: string) => Buffer.from(hex, "hex");
const userRef = bytes(golden.userRefs.userRef);
const binding: SecretBinding = {
  ...golden.envelope.binding,
  userRef,
  part: "fields",
};

describe("W4 golden vectors of stored formats", () => {
  it("W4 derives the same user ref, fingerprint key, fingerprint and hint from the same pepper", () => {
    const pepper = bytes(golden.userRefs.pepper);
    expect(deriveUserRef(pepper, golden.userRefs.issuer, golden.userRefs.subject).toString("hex")).toBe(
      golden.userRefs.userRef,
    );
    const fingerprintKey = deriveFingerprintKey(pepper);
    expect(fingerprintKey.toString("hex")).toBe(golden.userRefs.fingerprintKey);
    expect(fingerprintFields(fingerprintKey, userRef, bytes(golden.fieldCodec.encoded))).toBe(
      golden.userRefs.fingerprint,
    );
    expect(maskedHint(bytes(golden.fieldCodec.fields.api_key))).toBe(golden.userRefs.hint);
  });

  it("W4 decodes stored field encodings and encodes fields to the same bytes", () => {
    const decoded = decodeFields(bytes(golden.fieldCodec.encoded));
    expect(Object.fromEntries([...decoded].map(([k, v]) => [k, v.toString("hex")]))).toEqual(
      golden.fieldCodec.fields,
    );
    expect(encodeFields(decoded).toString("hex")).toBe(golden.fieldCodec.encoded);
  });

  it("W4 opens sealed fields and hints written by the first release, under their exact binding", () => {
    const dataKey = bytes(golden.envelope.dataKey);
    expect(open(dataKey, bytes(golden.envelope.sealedFields), binding).toString("hex")).toBe(
      golden.fieldCodec.encoded,
    );
    expect(
      open(dataKey, bytes(golden.envelope.sealedHint), { ...binding, part: "hint" }).toString("utf8"),
    ).toBe(golden.userRefs.hint);
  });

  it.each([
    ["secret id", { secretId: "0190d6a2-7c1e-7000-8000-000000000002" }],
    ["user ref", { userRef: Buffer.alloc(32, 1) }],
    ["provider", { provider: "kraken" }],
    ["version", { version: 2 }],
    ["part", { part: "hint" as const }],
  ])("W4 refuses the stored ciphertext under another %s", (_field, change) => {
    const dataKey = bytes(golden.envelope.dataKey);
    expect(() => open(dataKey, bytes(golden.envelope.sealedFields), { ...binding, ...change })).toThrow(
      /integrity/,
    );
  });

  it("W4 encodes and chains audit rows to the stored bytes and hashes, so old trails still verify", () => {
    for (const row of golden.audit) {
      const event = {
        ...row.event,
        userRef: row.event.userRef === null ? null : bytes(row.event.userRef),
      } as AuditEvent;
      const entry = toAuditEntry(event, new Date(row.occurredAt));
      expect(encodeAuditEntry(row.seq, entry).toString("hex")).toBe(row.encoded);
      expect(chainHash(bytes(row.prevHash), row.seq, entry).toString("hex")).toBe(row.hash);
    }
    // The vectors chain: each row's previous hash is the row before's hash.
    expect(golden.audit.slice(1).map((r) => r.prevHash)).toEqual(
      golden.audit.slice(0, -1).map((r) => r.hash),
    );
  });

  const dirs: string[] = [];
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it("W4 unwraps a data key wrapped by the local keyring's first format", async () => {
    const dir = await mkdtemp(join(tmpdir(), "golden-keyring-"));
    dirs.push(dir);
    const path = join(dir, "keyring.json");
    await writeFile(path, JSON.stringify(golden.localKeyring.file));
    await chmod(path, 0o600);
    const keyring = await loadOrCreateLocalKeyring({ path, nodeEnv: "test" });
    const unwrapped = await keyring.decrypt(
      { wrapped: bytes(golden.localKeyring.wrapped), keyId: golden.localKeyring.keyId },
      golden.localKeyring.context,
    );
    expect(unwrapped.plaintext.toString("hex")).toBe(golden.localKeyring.plaintext);
    expect(unwrapped.keyId).toBe(golden.localKeyring.keyId);
  });

  it("H92 verifies stored secret heads with and without a grant, and refuses one with a widened grant", () => {
    const dataKey = bytes(golden.envelope.dataKey);
    const head = { ...golden.envelope.binding, userRef };
    expect(headMac(dataKey, head).toString("hex")).toBe(golden.secretHead.v1);
    const grant = golden.secretHead.v2.grant;
    expect(headMac(dataKey, { ...head, grant }).toString("hex")).toBe(golden.secretHead.v2.mac);
    expect(headMac(dataKey, { ...head, grant: [] }).toString("hex")).toBe(golden.secretHead.v2EmptyGrant);
    // Order in the column does not matter; membership does.
    expect(() =>
      verifyHead(dataKey, bytes(golden.secretHead.v2.mac), { ...head, grant: [...grant].reverse() }),
    ).not.toThrow();
    expect(() =>
      verifyHead(dataKey, bytes(golden.secretHead.v2.mac), { ...head, grant: [...grant, "transfer"] }),
    ).toThrow(/integrity/);
    // A v2 head read as a pre-grant (v1) one, i.e. with the grant column cleared, fails too.
    expect(() => verifyHead(dataKey, bytes(golden.secretHead.v2.mac), head)).toThrow(/integrity/);
  });
});
