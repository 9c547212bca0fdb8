import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeFields, encodeFields } from "../../../src/crypto/field-codec.js";
import { BrokerError } from "../../../src/errors.js";

function fields(entries: Record<string, string>): Map<string, Buffer> {
  return new Map(Object.entries(entries).map(([k, v]) => [k, Buffer.from(v, "utf8")]));
}

function expectMalformed(input: Uint8Array): void {
  let caught: unknown;
  try {
    decodeFields(input);
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(BrokerError);
  expect((caught as BrokerError).code).toBe("data_loss");
}

describe("field codec", () => {
  it("round-trips a secret's structured fields", () => {
    const input = fields({ api_key: "AKIA0123", api_secret: "s3cr3t/with=chars", passphrase: "" });
    const decoded = decodeFields(encodeFields(input));
    expect([...decoded.keys()].sort()).toEqual(["api_key", "api_secret", "passphrase"]);
    for (const [name, value] of input) expect(decoded.get(name)?.equals(value)).toBe(true);
  });

  it("encodes the same fields to the same bytes whatever the insertion order", () => {
    const a = encodeFields(fields({ api_key: "k", api_secret: "s", z: "1" }));
    const b = encodeFields(fields({ z: "1", api_secret: "s", api_key: "k" }));
    expect(a.equals(b)).toBe(true);
  });

  it("is not JSON: the encoding holds no quotes or braces around the values", () => {
    const encoded = encodeFields(fields({ api_key: "abc" }));
    expect(encoded.toString("utf8")).not.toContain('"');
    expect(encoded[0]).toBe(0x01);
  });

  it("round-trips arbitrary names and binary values", () => {
    fc.assert(
      fc.property(
        fc.dictionary(fc.string({ minLength: 1, maxLength: 20 }), fc.uint8Array({ maxLength: 64 })),
        (dict) => {
          const input = new Map(Object.entries(dict).map(([k, v]) => [k, Buffer.from(v)]));
          const decoded = decodeFields(encodeFields(input));
          expect(decoded.size).toBe(input.size);
          for (const [name, value] of input) expect(decoded.get(name)?.equals(value)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it("returns values that are copies: zeroing the input does not change them", () => {
    const encoded = encodeFields(fields({ api_key: "keep-me" }));
    const decoded = decodeFields(encoded);
    encoded.fill(0);
    expect(decoded.get("api_key")?.toString("utf8")).toBe("keep-me");
  });

  it("rejects an empty field name when encoding", () => {
    expect(() => encodeFields(fields({ "": "x" }))).toThrow(BrokerError);
  });

  it("reports data_loss for empty input, an unknown codec version and every truncation", () => {
    expectMalformed(new Uint8Array(0));
    const encoded = encodeFields(fields({ api_key: "abc", api_secret: "def" }));
    const wrongVersion = Buffer.from(encoded);
    wrongVersion[0] = 0x02;
    expectMalformed(wrongVersion);
    for (let length = 0; length < encoded.length; length++) expectMalformed(encoded.subarray(0, length));
  });

  it("reports data_loss for trailing bytes", () => {
    expectMalformed(Buffer.concat([encodeFields(fields({ a: "1" })), Buffer.of(0)]));
  });

  it("reports data_loss for duplicate or unsorted names (non-canonical input)", () => {
    const one = encodeFields(fields({ b: "1" })).subarray(5);
    const other = encodeFields(fields({ a: "1" })).subarray(5);
    const header = Buffer.from([0x01, 0, 0, 0, 2]);
    expectMalformed(Buffer.concat([header, one, one]));
    expectMalformed(Buffer.concat([header, one, other]));
    expect(decodeFields(Buffer.concat([header, other, one])).size).toBe(2);
  });

  it("reports data_loss for an empty name or invalid UTF-8 in a name", () => {
    expectMalformed(Buffer.from([0x01, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]));
    expectMalformed(Buffer.from([0x01, 0, 0, 0, 1, 0, 1, 0xff, 0, 0, 0, 0]));
  });

  it("reports data_loss, never another error, for any random input", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
        try {
          decodeFields(bytes);
        } catch (err) {
          expect(err).toBeInstanceOf(BrokerError);
          expect((err as BrokerError).code).toBe("data_loss");
        }
      }),
      { numRuns: 500 },
    );
  });
});
