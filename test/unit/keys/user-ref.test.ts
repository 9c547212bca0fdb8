import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { encodeFields } from "../../../src/crypto/field-codec.js";
import { BrokerError } from "../../../src/errors.js";
import {
  deriveFingerprintKey,
  deriveUserRef,
  fingerprintFields,
  maskedHint,
} from "../../../src/keys/user-ref.js";

const pepper = randomBytes(32);
const issuer = "https://tenant.eu.auth0.com/";

describe("deriveUserRef", () => {
  it("is deterministic and 32 bytes", () => {
    const a = deriveUserRef(pepper, issuer, "google-oauth2|1234");
    const b = deriveUserRef(pepper, issuer, "google-oauth2|1234");
    expect(a.length).toBe(32);
    expect(a.equals(b)).toBe(true);
  });

  it("differs by subject, by issuer and by pepper", () => {
    const base = deriveUserRef(pepper, issuer, "google-oauth2|1234");
    expect(deriveUserRef(pepper, issuer, "google-oauth2|1235").equals(base)).toBe(false);
    expect(deriveUserRef(pepper, "https://other.auth0.com/", "google-oauth2|1234").equals(base)).toBe(false);
    expect(deriveUserRef(randomBytes(32), issuer, "google-oauth2|1234").equals(base)).toBe(false);
  });

  it("does not confuse issuer and subject split at a different place", () => {
    const a = deriveUserRef(pepper, "https://a|", "b");
    const b = deriveUserRef(pepper, "https://a", "|b");
    expect(a.equals(b)).toBe(false);
  });

  it("does not contain the subject in any encoding", () => {
    const ref = deriveUserRef(pepper, issuer, "facebook|99887766");
    expect(ref.toString("hex")).not.toContain(Buffer.from("99887766").toString("hex"));
    expect(ref.includes(Buffer.from("facebook"))).toBe(false);
  });

  it("refuses a short pepper and an empty subject", () => {
    expect(() => deriveUserRef(randomBytes(16), issuer, "x")).toThrow(BrokerError);
    expect(() => deriveUserRef(pepper, issuer, "")).toThrow(BrokerError);
  });
});

describe("fingerprintFields", () => {
  const fpKey = deriveFingerprintKey(pepper);
  const userRef = deriveUserRef(pepper, issuer, "auth0|1");
  const encoded = encodeFields(new Map([["api_key", Buffer.from("AKIA-same-value")]]));

  it("derives a fingerprint key distinct from the pepper and from user refs", () => {
    expect(fpKey.length).toBe(32);
    expect(fpKey.equals(pepper)).toBe(false);
    expect(deriveFingerprintKey(pepper).equals(fpKey)).toBe(true);
  });

  it("is 'fp_' and 24 hex characters, stable for the same user and fields", () => {
    const fp = fingerprintFields(fpKey, userRef, encoded);
    expect(fp).toMatch(/^fp_[0-9a-f]{24}$/);
    expect(fingerprintFields(fpKey, userRef, encoded)).toBe(fp);
  });

  it("changes with the value, the user and the key, so a database thief cannot confirm a guess", () => {
    const fp = fingerprintFields(fpKey, userRef, encoded);
    const otherValue = encodeFields(new Map([["api_key", Buffer.from("AKIA-same-valuf")]]));
    expect(fingerprintFields(fpKey, userRef, otherValue)).not.toBe(fp);
    expect(fingerprintFields(fpKey, deriveUserRef(pepper, issuer, "auth0|2"), encoded)).not.toBe(fp);
    expect(fingerprintFields(deriveFingerprintKey(randomBytes(32)), userRef, encoded)).not.toBe(fp);
  });
});

describe("maskedHint", () => {
  it("shows '…' and the last 4 characters of a value of 16 bytes or more", () => {
    expect(maskedHint(Buffer.from("sk_live_0123456789abcdef"))).toBe("…cdef");
    expect(maskedHint(Buffer.from("0123456789abA9F3"))).toBe("…A9F3");
  });

  it("shows only '…' for values shorter than 16 bytes", () => {
    expect(maskedHint(Buffer.from("0123456789abcde"))).toBe("…");
    expect(maskedHint(Buffer.alloc(0))).toBe("…");
  });

  it("never reveals more than 4 characters, and nothing of a non-printable tail", () => {
    const hint = maskedHint(Buffer.from("x".repeat(200)));
    expect(hint.length).toBe(5);
    expect(
      maskedHint(Buffer.concat([Buffer.from("0123456789abcdef"), Buffer.of(0x00, 0x41, 0x42, 0x43)])),
    ).toBe("…");
    expect(maskedHint(Buffer.from("0123456789abcdé€"))).toBe("…");
  });
});
