import { randomUUID } from "node:crypto";
import type { JWTPayload } from "jose";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  BACKCHANNEL_LOGOUT_EVENT,
  createLogoutTokenVerifier,
  type LogoutTokenVerifier,
} from "../../../src/auth/logout-token-verifier.js";
import { deriveSessionRef, deriveUserRef } from "../../../src/keys/user-ref.js";
import { brokerErrorOf } from "../../support/broker-errors.js";
import { type SignOptions, startTestIssuer, type TestIssuer } from "../../support/test-issuer.js";

const PEPPER = Buffer.alloc(32, 9);
const CLIENT_ID = "main-app-client";
const MAX_AGE_SEC = 120;

let issuer: TestIssuer;
let impostor: TestIssuer;
let verifier: LogoutTokenVerifier;

beforeAll(async () => {
  [issuer, impostor] = await Promise.all([startTestIssuer(), startTestIssuer()]);
  verifier = createLogoutTokenVerifier({
    issuer: issuer.issuer,
    audiences: ["another-app", CLIENT_ID],
    jwksUrl: issuer.jwksUrl,
    jwksCacheMaxAgeMs: 600_000,
    jwksCooldownMs: 1_000,
    jwksTimeoutMs: 2_000,
    clockToleranceSec: 5,
    maxAgeSec: MAX_AGE_SEC,
    deriveUserRef: (iss, sub) => deriveUserRef(PEPPER, iss, sub),
    deriveSessionRef: (iss, sid) => deriveSessionRef(PEPPER, iss, sid),
  });
});
afterAll(async () => {
  await Promise.all([issuer.close(), impostor.close()]);
});

/** A logout token as Auth0 sends one: no scope, the app's client id as audience, the event. */
function logoutToken(
  claims: Partial<JWTPayload> = {},
  opts: SignOptions & { from?: TestIssuer } = {},
): Promise<string> {
  const from = opts.from ?? issuer;
  return from.sign(
    {
      iss: issuer.issuer,
      aud: CLIENT_ID,
      sub: "auth0|logout-user",
      sid: "session-1",
      jti: randomUUID(),
      events: { [BACKCHANNEL_LOGOUT_EVENT]: {} },
      ...claims,
    },
    {
      ...opts,
      omitClaims: ["scope", "exp", ...(opts.omitClaims ?? [])],
      header: opts.header ?? { typ: "logout+jwt" },
    },
  );
}

describe("logout token verifier", () => {
  it("I125 accepts a signed logout token and returns only HMAC'd refs of its sub and sid", async () => {
    const verified = await verifier.verify(await logoutToken());
    expect(verified.userRef).toEqual(deriveUserRef(PEPPER, issuer.issuer, "auth0|logout-user"));
    expect(verified.sessionRef).toEqual(deriveSessionRef(PEPPER, issuer.issuer, "session-1"));
    expect(verified.sessionRef).not.toEqual(deriveUserRef(PEPPER, issuer.issuer, "session-1"));
    expect(verified.tokenIdHash).toHaveLength(32);
    expect(JSON.stringify(verified)).not.toContain("logout-user");
    expect(JSON.stringify(verified)).not.toContain("session-1");
  });

  it("I125 accepts a token naming only a session (sid without sub), or only a user", async () => {
    const sidOnly = await verifier.verify(await logoutToken({}, { omitClaims: ["sub"] }));
    expect(sidOnly.userRef).toBeUndefined();
    expect(sidOnly.sessionRef).toBeDefined();
    const subOnly = await verifier.verify(await logoutToken({}, { omitClaims: ["sid"] }));
    expect(subOnly.sessionRef).toBeUndefined();
    expect(subOnly.userRef).toBeDefined();
  });

  it("I126 refuses a logout token signed by a key the issuer does not publish (forged)", async () => {
    const forged = await logoutToken({}, { from: impostor, kid: issuer.currentKid() });
    const err = await brokerErrorOf(verifier.verify(forged));
    expect(err.code).toBe("invalid_argument");
    expect(err.message).toBe("logout token signature invalid");
  });

  it("I126 refuses a logout token with another issuer, or with a key-naming header", async () => {
    expect((await brokerErrorOf(verifier.verify(await logoutToken({ iss: impostor.issuer })))).message).toBe(
      "logout token issuer not accepted",
    );
    const withJku = await logoutToken({}, { header: { typ: "logout+jwt", jku: impostor.jwksUrl } });
    expect((await brokerErrorOf(verifier.verify(withJku))).message).toBe("logout token header not allowed");
  });

  it("I127 refuses a logout token addressed to another client, or to the broker's API (an access-token audience)", async () => {
    for (const aud of ["some-other-client", issuer.audience]) {
      const err = await brokerErrorOf(verifier.verify(await logoutToken({ aud })));
      expect(err.code).toBe("invalid_argument");
      expect(err.message).toBe("logout token audience not accepted");
    }
  });

  it("I128 refuses a stale logout token (iat older than the maximum age) and one issued in the future", async () => {
    const now = Math.floor(Date.now() / 1000);
    const stale = await brokerErrorOf(verifier.verify(await logoutToken({ iat: now - MAX_AGE_SEC - 30 })));
    expect(stale.message).toBe("logout token is stale");
    const future = await brokerErrorOf(verifier.verify(await logoutToken({ iat: now + 600 })));
    expect(future.code).toBe("invalid_argument");
  });

  it("I129 refuses tokens that are not logout tokens: no event, a nonce, no sub or sid, no jti, an access token", async () => {
    const cases: Array<[string, Promise<string>]> = [
      ["no event", logoutToken({}, { omitClaims: ["events"] })],
      ["another event", logoutToken({ events: { "http://schemas.openid.net/event/other": {} } })],
      ["nonce", logoutToken({ nonce: "n-0S6_WzA2Mj" })],
      ["neither sub nor sid", logoutToken({}, { omitClaims: ["sub", "sid"] })],
      ["no jti", logoutToken({}, { omitClaims: ["jti"] })],
      ["access token", issuer.sign({ aud: CLIENT_ID }, { header: { typ: "at+jwt" } })],
      ["access token without the event", issuer.sign({ aud: CLIENT_ID })],
    ];
    for (const [name, token] of cases) {
      const err = await brokerErrorOf(verifier.verify(await token));
      expect(err.code, name).toBe("invalid_argument");
    }
  });

  it("I129 never puts the token's claims in an error (the cause keeps jose's code only)", async () => {
    const err = await brokerErrorOf(verifier.verify(await logoutToken({ aud: "some-other-client" })));
    expect(JSON.stringify({ message: err.message, cause: String(err.cause) })).not.toContain("logout-user");
  });
});
