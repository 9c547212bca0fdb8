import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import { asServiceError, unary, type WireMessage } from "../support/grpc-client.js";
import { describeOnEachDatabase } from "../support/test-database.js";

const CANARY_KEY = "CANARY-e2e-api-key-7f3a9c1d5e2b8a4f6c0d";
const CANARY_SECRET = "CANARY-e2e-api-secret-d41d8cd98f00b204e980";
const ALICE = "google-oauth2|e2e-alice-canary-1111";
const BOB = "facebook|e2e-bob-canary-2222";

async function failure(promise: Promise<unknown>) {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  return asServiceError(err);
}

describeOnEachDatabase("SecretService end to end over grpc-js on %s", (kind) => {
  let broker: BrokerHarness;
  let appKey: string;
  let aliceToken: string;
  let bobToken: string;
  const responses: WireMessage[] = [];
  const tokens: string[] = [];

  beforeAll(async () => {
    broker = await startBroker(kind);
    appKey = (await broker.callerKey(["secrets:read", "secrets:write"])).key;
    aliceToken = await broker.tokenFor(ALICE);
    bobToken = await broker.tokenFor(BOB);
    tokens.push(aliceToken, bobToken);
  });

  afterAll(async () => {
    await broker.close();
    // I7: nothing the suite did may have put a secret, token, caller key or raw sub in a log line.
    expect(findLeaks(broker.logs.text(), [CANARY_KEY, CANARY_SECRET, ALICE, BOB, appKey, ...tokens])).toEqual(
      [],
    );
  });

  const call = async (method: string, request: WireMessage, bearerToken = aliceToken, callerKey = appKey) => {
    const { response } = await unary(broker.clients.secrets, method, request, { callerKey, bearerToken });
    responses.push(response);
    return response;
  };

  it("stores a key pair and lists it back as metadata only", async () => {
    const put = await call("PutSecret", {
      provider: "kraken",
      label: "Main account",
      fields: { api_key: CANARY_KEY, api_secret: CANARY_SECRET },
    });
    const secret = put.secret as WireMessage;
    expect(secret.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(secret).toMatchObject({
      provider: "kraken",
      label: "Main account",
      version: 1,
      hint: `…${CANARY_KEY.slice(-4)}`,
    });
    expect(secret.fieldNames).toEqual(["api_key", "api_secret"]);

    const list = await call("ListSecrets", {});
    expect(list.secrets).toHaveLength(1);
    expect((list.secrets as WireMessage[])[0]?.id).toBe(secret.id);
  });

  it("I1 never returns the secret in any response", () => {
    const everything = JSON.stringify(responses);
    expect(findLeaks(everything, [CANARY_KEY, CANARY_SECRET])).toEqual([]);
    // The masked hint carries the last four characters only.
    expect(everything).not.toContain(CANARY_KEY.slice(-8));
  });

  it("I4 answers NOT_FOUND to another user for the same secret id, and Bob sees an empty list", async () => {
    const list = await call("ListSecrets", {});
    const id = (list.secrets as WireMessage[])[0]?.id as string;
    const del = await failure(call("DeleteSecret", { secretId: id }, bobToken));
    expect(del.code).toBe(status.NOT_FOUND);
    const put = await failure(
      call(
        "PutSecret",
        {
          secretId: id,
          provider: "kraken",
          fields: { api_key: "x".repeat(24), api_secret: "y".repeat(24) },
        },
        bobToken,
      ),
    );
    expect(put.code).toBe(status.NOT_FOUND);
    expect(put.details).toBe(del.details);
    expect((await call("ListSecrets", {}, bobToken)).secrets).toEqual([]);
  });

  it("A12 keeps two social logins with the same email apart (different sub)", async () => {
    const twin = await broker.tokenFor("facebook|e2e-alice-canary-1111", { email: "alice@example.com" });
    tokens.push(twin);
    expect((await call("ListSecrets", {}, twin)).secrets).toEqual([]);
  });

  it("adds a version to an existing secret and deletes it", async () => {
    const created = (
      await call("PutSecret", {
        provider: "test-upstream",
        label: "ci",
        fields: { token: "ghp_e2e_first_token_000000" },
      })
    ).secret as WireMessage;
    const next = (
      await call("PutSecret", {
        secretId: created.id,
        provider: "test-upstream",
        fields: { token: "ghp_e2e_second_token_11111" },
      })
    ).secret as WireMessage;
    expect(next).toMatchObject({ id: created.id, version: 2, label: "ci" });
    await call("DeleteSecret", { secretId: created.id });
    const again = await failure(call("DeleteSecret", { secretId: created.id }));
    expect(again.code).toBe(status.NOT_FOUND);
  });

  it.each([
    [
      "an unknown-format provider",
      { provider: "Bad Provider!", label: "x", fields: { api_key: "k".repeat(20) } },
    ],
    [
      "a label with a newline (log forging)",
      { provider: "github", label: "a\nb", fields: { token: "t".repeat(20) } },
    ],
    ["an empty label on create", { provider: "github", label: "", fields: { token: "t".repeat(20) } }],
    ["no fields", { provider: "github", label: "x", fields: {} }],
    ["a bad field name", { provider: "github", label: "x", fields: { "Bad-Name": "t".repeat(20) } }],
    ["an oversized field", { provider: "github", label: "x", fields: { token: "t".repeat(9000) } }],
    [
      "too many fields",
      {
        provider: "github",
        label: "x",
        fields: Object.fromEntries(Array.from({ length: 9 }, (_, i) => [`f${i}`, "v"])),
      },
    ],
    [
      "a malformed secret id",
      { secretId: "../../etc/passwd", provider: "github", label: "x", fields: { token: "t" } },
    ],
  ])("answers INVALID_ARGUMENT to %s", async (_name, request) => {
    const err = await failure(call("PutSecret", request));
    expect(err.code).toBe(status.INVALID_ARGUMENT);
    expect(err.details).not.toContain("t".repeat(20));
  });

  it("answers INVALID_ARGUMENT to a malformed secret id on delete", async () => {
    expect((await failure(call("DeleteSecret", { secretId: "not-a-uuid" }))).code).toBe(
      status.INVALID_ARGUMENT,
    );
  });

  it("refuses a revoked caller key at once (no stale cache)", async () => {
    const { key, id } = await broker.callerKey(["secrets:read"]);
    await call("ListSecrets", {}, aliceToken, key);
    await broker.revokeCallerKey(id);
    expect((await failure(call("ListSecrets", {}, aliceToken, key))).code).toBe(status.UNAUTHENTICATED);
  });

  it("refuses an expired caller key", async () => {
    const { key } = await broker.callerKey(["secrets:read"], { expiresAt: new Date(Date.now() + 300) });
    await new Promise((r) => setTimeout(r, 400));
    expect((await failure(call("ListSecrets", {}, aliceToken, key))).code).toBe(status.UNAUTHENTICATED);
  });

  it("refuses a machine-to-machine token on a user call with PERMISSION_DENIED", async () => {
    const m2m = await broker.tokenFor("someclient@clients", { gty: "client-credentials" });
    tokens.push(m2m);
    expect((await failure(call("ListSecrets", {}, m2m))).code).toBe(status.PERMISSION_DENIED);
  });

  it("answers UNAVAILABLE, not UNAUTHENTICATED, when the JWKS is down and no key is cached", async () => {
    await broker.issuer.rotateKey();
    broker.issuer.setStatus(503);
    // Past the refetch cooldown (1 s here): an unknown kid now needs a JWKS fetch, which fails.
    await new Promise((resolve) => setTimeout(resolve, 1100));
    try {
      const fresh = await broker.issuer.sign({ sub: ALICE });
      tokens.push(fresh);
      const err = await failure(call("ListSecrets", {}, fresh));
      expect(err.code).toBe(status.UNAVAILABLE);
    } finally {
      broker.issuer.setStatus(null);
    }
  });

  it("returns a request id with every call", async () => {
    let requestId: unknown;
    await unary(
      broker.clients.secrets,
      "ListSecrets",
      {},
      {
        callerKey: appKey,
        bearerToken: aliceToken,
        onHeaders: (headers) => {
          requestId = headers.get("x-request-id")[0];
        },
      },
    );
    expect(requestId).toMatch(/^[0-9a-f-]{16,}$/);
  });
});
