import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { open, type SecretBinding, seal } from "../../src/crypto/envelope.js";
import { BrokerError } from "../../src/errors.js";

/**
 * Catalogue D40/D41 as properties: whatever happens to a sealed secret's bytes — one bit
 * flipped anywhere (version byte, nonce, ciphertext, tag), cut short, extended, or one byte
 * replaced — `open` fails closed with the one generic data_loss error. It never returns bytes
 * (plaintext or garbage) and never throws anything else (a RangeError from a short buffer, a
 * TypeError), so no tamper path can reach the caller as INTERNAL or as data.
 */

const INTEGRITY_MESSAGE = "stored secret failed its integrity check";

const binding = fc.record({
  secretId: fc.uuid(),
  userRef: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b)),
  provider: fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,31}$/),
  version: fc.nat({ max: 1_000_000 }),
  part: fc.constantFrom("fields" as const, "hint" as const),
});

const sealedCase = fc.record({
  key: fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b)),
  plaintext: fc.uint8Array({ maxLength: 200 }),
  binding,
});

type Mutation =
  | { readonly kind: "flip"; readonly index: number; readonly bit: number }
  | { readonly kind: "truncate"; readonly length: number }
  | { readonly kind: "extend"; readonly extra: Uint8Array }
  | { readonly kind: "substitute"; readonly index: number; readonly delta: number };

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant("flip" as const), index: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant("truncate" as const), length: fc.nat() }),
  fc.record({ kind: fc.constant("extend" as const), extra: fc.uint8Array({ minLength: 1, maxLength: 64 }) }),
  // A non-zero delta modulo 256 always yields a different byte.
  fc.record({
    kind: fc.constant("substitute" as const),
    index: fc.nat(),
    delta: fc.integer({ min: 1, max: 255 }),
  }),
);

function mutate(sealed: Buffer, m: Mutation): Buffer {
  const out = Buffer.from(sealed);
  switch (m.kind) {
    case "flip": {
      const i = m.index % out.length;
      out[i] = (out[i] ?? 0) ^ (1 << m.bit);
      return out;
    }
    case "truncate":
      return out.subarray(0, m.length % out.length);
    case "extend":
      return Buffer.concat([out, m.extra]);
    case "substitute": {
      const i = m.index % out.length;
      out[i] = ((out[i] ?? 0) + m.delta) & 0xff;
      return out;
    }
  }
}

/** What `open` did: returned bytes, or threw. */
function attemptOpen(
  key: Buffer,
  sealed: Buffer,
  b: SecretBinding,
): { returned: Buffer } | { threw: unknown } {
  try {
    return { returned: open(key, sealed, b) };
  } catch (err) {
    return { threw: err };
  }
}

describe("D40 sealed-secret tampering, as a property", () => {
  it("D40 opens every untouched sealed value to its plaintext (the control for the properties below)", () => {
    fc.assert(
      fc.property(sealedCase, ({ key, plaintext, binding: b }) => {
        const sealed = seal(key, plaintext, b);
        expect(open(key, sealed, b).equals(Buffer.from(plaintext))).toBe(true);
      }),
      { numRuns: 200 },
    );
  });

  it("D40 fails closed with data_loss on any bit flip, truncation, extension or byte substitution, never returning bytes", () => {
    fc.assert(
      fc.property(sealedCase, mutation, ({ key, plaintext, binding: b }, m) => {
        const tampered = mutate(seal(key, plaintext, b), m);
        const outcome = attemptOpen(key, tampered, b);
        expect(outcome).not.toHaveProperty("returned");
        const err = "threw" in outcome ? outcome.threw : undefined;
        expect(err).toBeInstanceOf(BrokerError);
        expect(err).toMatchObject({ code: "data_loss", message: INTEGRITY_MESSAGE });
      }),
      { numRuns: 1_000 },
    );
  });

  it("D41 fails closed with data_loss for every format byte other than the current version", () => {
    fc.assert(
      fc.property(sealedCase, fc.integer({ min: 0, max: 255 }), ({ key, plaintext, binding: b }, format) => {
        fc.pre(format !== 0x01);
        const sealed = seal(key, plaintext, b);
        sealed[0] = format;
        const outcome = attemptOpen(key, sealed, b);
        expect(outcome).not.toHaveProperty("returned");
        expect("threw" in outcome ? outcome.threw : undefined).toMatchObject({ code: "data_loss" });
      }),
      { numRuns: 300 },
    );
  });
});

type BindingChange = readonly [field: keyof SecretBinding, change: (b: SecretBinding) => SecretBinding];

/** Each binding field, changed to a different value of the same kind. */
const bindingChange: fc.Arbitrary<BindingChange> = fc.oneof(
  fc
    .uuid()
    .map((id): BindingChange => ["secretId", (b) => ({ ...b, secretId: id === b.secretId ? `${id}0` : id })]),
  fc.tuple(fc.nat({ max: 31 }), fc.integer({ min: 1, max: 255 })).map(
    ([i, delta]): BindingChange => [
      "userRef",
      (b) => {
        const userRef = Buffer.from(b.userRef);
        userRef[i] = ((userRef[i] ?? 0) + delta) & 0xff;
        return { ...b, userRef };
      },
    ],
  ),
  fc.constant<BindingChange>(["provider", (b) => ({ ...b, provider: `${b.provider}x` })]),
  fc
    .integer({ min: 1, max: 1_000 })
    .map((d): BindingChange => ["version", (b) => ({ ...b, version: b.version + d })]),
  fc.constant<BindingChange>(["part", (b) => ({ ...b, part: b.part === "fields" ? "hint" : "fields" })]),
);

describe("W8 D36 the binding, as a property", () => {
  it("W8 fails closed with data_loss when any one binding field differs (secret id, user ref, provider, version, part), under the same key", () => {
    const seen = new Set<string>();
    fc.assert(
      fc.property(sealedCase, bindingChange, ({ key, plaintext, binding: b }, [field, change]) => {
        seen.add(field);
        const outcome = attemptOpen(key, seal(key, plaintext, b), change(b));
        expect(outcome).not.toHaveProperty("returned");
        expect("threw" in outcome ? outcome.threw : undefined).toMatchObject({
          code: "data_loss",
          message: INTEGRITY_MESSAGE,
        });
      }),
      { numRuns: 500 },
    );
    // Every field was exercised, so removing any one from the AAD fails this test.
    expect([...seen].sort()).toEqual(["part", "provider", "secretId", "userRef", "version"]);
  });
});
