import { describe, expect, it } from "vitest";
import { MAX_TOKEN_LENGTH, precheckAccessToken } from "../../../src/auth/token-precheck.js";
import { BrokerError } from "../../../src/errors.js";
import { b64url } from "./verifier-fixture.js";

const PAYLOAD = b64url({ sub: "auth0|x", exp: 2_000_000_000 });
const SIGNATURE = b64url("not-a-real-signature");
const token = (header: Record<string, unknown> | string, signature = SIGNATURE): string =>
  `${b64url(header)}.${PAYLOAD}.${signature}`;
const GOOD_HEADER = { alg: "RS256", typ: "JWT", kid: "key-1" };

function rejectionOf(raw: string | undefined): BrokerError {
  try {
    precheckAccessToken(raw);
  } catch (err) {
    if (err instanceof BrokerError) return err;
    throw err;
  }
  throw new Error("precheck accepted the token");
}

describe("precheckAccessToken", () => {
  it("accepts a well-formed RS256 token with a kid", () => {
    expect(() => precheckAccessToken(token(GOOD_HEADER))).not.toThrow();
    expect(() => precheckAccessToken(token({ alg: "RS256", kid: "k", typ: "at+jwt" }))).not.toThrow();
    expect(() =>
      precheckAccessToken(token({ alg: "RS256", kid: "k", typ: "application/AT+JWT" })),
    ).not.toThrow();
  });

  it("rejects a missing or empty token as unauthenticated", () => {
    expect(rejectionOf(undefined)).toMatchObject({
      code: "unauthenticated",
      message: "user access token missing",
    });
    expect(rejectionOf("").code).toBe("unauthenticated");
  });

  it.each(["none", "None", "NONE", "nOnE"])("A1 rejects alg %s with or without a signature", (alg) => {
    const header = { alg, typ: "JWT", kid: "key-1" };
    expect(rejectionOf(`${b64url(header)}.${PAYLOAD}.`).code).toBe("unauthenticated");
    expect(rejectionOf(token(header)).message).toBe("unsupported user access token algorithm");
  });

  it.each(["HS256", "RS384", "PS256", "ES256", "rs256", ""])(
    "A2 rejects alg %j: only RS256 is pinned",
    (alg) => {
      expect(rejectionOf(token({ ...GOOD_HEADER, alg })).message).toBe(
        "unsupported user access token algorithm",
      );
    },
  );

  it.each(["jku", "x5u", "jwk", "x5c"])("A3/A4 rejects a token that names its own key via %s", (name) => {
    const err = rejectionOf(token({ ...GOOD_HEADER, [name]: "http://127.0.0.1:9/keys" }));
    expect(err).toMatchObject({ code: "unauthenticated", message: "user access token header not allowed" });
  });

  it.each([
    ["missing", undefined],
    ["empty", ""],
    ["a number", 42],
    ["129 chars", "k".repeat(129)],
    ["10 KB", "k".repeat(10 * 1024)],
    ["a newline", "key\n1"],
    ["non-ASCII", "clé"],
  ])("A5 rejects a kid that is %s", (_label, kid) => {
    expect(rejectionOf(token({ alg: "RS256", kid })).code).toBe("unauthenticated");
  });

  it("A5 never echoes the kid in the error", () => {
    const kid = "../../etc/passwd\u0000' OR 1=1 --";
    expect(rejectionOf(token({ alg: "RS256", kid })).message).not.toContain("passwd");
  });

  it.each(["JOSE", "JWE", "", 7])("rejects typ %j", (typ) => {
    expect(rejectionOf(token({ ...GOOD_HEADER, typ })).message).toBe("user access token type not accepted");
  });

  it.each([
    ["four segments", `${b64url(GOOD_HEADER)}.${PAYLOAD}.${SIGNATURE}.${SIGNATURE}`],
    ["two segments", `${b64url(GOOD_HEADER)}.${PAYLOAD}`],
    ["five segments (JWE)", `${b64url(GOOD_HEADER)}.a.b.c.d`],
    ["standard base64 characters", `${b64url(GOOD_HEADER)}.${PAYLOAD}+/.${SIGNATURE}`],
    ["padding", `${b64url(GOOD_HEADER)}==.${PAYLOAD}.${SIGNATURE}`],
    ["whitespace", ` ${token(GOOD_HEADER)}`],
    ["a 4n+1 length header", `${b64url(GOOD_HEADER)}A.${PAYLOAD}.${SIGNATURE}`],
    ["a header that is not JSON", token("{alg:RS256}")],
    ["a header that is a JSON array", token('["RS256"]')],
    [
      "a header that is not UTF-8",
      `${Buffer.from([0x7b, 0xff, 0x7d]).toString("base64url")}.${PAYLOAD}.${SIGNATURE}`,
    ],
  ])("A15 rejects %s", (_label, raw) => {
    expect(rejectionOf(raw)).toMatchObject({
      code: "unauthenticated",
      message: "malformed user access token",
    });
  });

  it("A15 rejects duplicate header members, including an escaped duplicate", () => {
    expect(rejectionOf(token('{"alg":"none","alg":"RS256","kid":"k"}')).code).toBe("unauthenticated");
    expect(rejectionOf(token('{"alg":"RS256","kid":"k","\\u006bid":"j"}')).code).toBe("unauthenticated");
    // Nested objects may repeat names that the top level also uses.
    expect(() =>
      precheckAccessToken(token('{"alg":"RS256","kid":"k","x":{"kid":"a","alg":"b"}}')),
    ).not.toThrow();
  });

  it("A15 rejects a 1 MB token by length", () => {
    const huge = `${b64url(GOOD_HEADER)}.${"A".repeat(1024 * 1024)}.${SIGNATURE}`;
    expect(rejectionOf(huge).message).toBe("user access token too long");
    expect(rejectionOf(`${"x".repeat(MAX_TOKEN_LENGTH - 2)}.a.b`).code).toBe("unauthenticated");
  });
});

describe("precheckAccessToken: refusal reasons", () => {
  it("gives a missing token the reason token_missing and a malformed one token_malformed", () => {
    expect(rejectionOf(undefined).reason).toBe("token_missing");
    expect(rejectionOf("").reason).toBe("token_missing");
    expect(rejectionOf("not.a-token").reason).toBe("token_malformed");
    expect(rejectionOf(token({ alg: "none", kid: "key-1" })).reason).toBe("token_malformed");
  });
});
