import { type Metadata, type ServiceError, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, HARNESS_JWKS_COOLDOWN_MS, startBroker } from "../support/broker-harness.js";
import {
  type GrpcCallOptions,
  type StreamResult,
  serverStream,
  type UnaryResult,
  unary,
  type WireMessage,
} from "../support/grpc-client.js";
import {
  type CanaryRegistry,
  createCanaryRegistry,
  describeLeaks,
  makeCanary,
  registerCanary,
  structuralLeaks,
} from "../support/leak-sweep.js";
import { dumpAllRows } from "../support/test-database.js";

/**
 * Catalogue E50 (SPEC I7): one broker driven through every kind of call — stores, lists, proxied
 * calls including echoing, redirecting and streaming upstreams, every failure status the API can
 * give, bad tokens that carry canaries in their claims and headers, and every admin RPC — with
 * canary secrets, tokens, caller keys and subjects. Then every place the broker writes is swept
 * for each canary in every encoding (test/support/leak-sweep.ts): its logs, every response and
 * its metadata, every error and its trailers, the Prometheus text, and a dump of every table
 * (secrets, users, caller keys, broker state, the audit trail and its chain head).
 */

type Source = "responses" | "errors" | "logs" | "metrics" | "database";

describe("E50 the canary sweep over one broker driven through every kind of call", () => {
  let broker: BrokerHarness;
  const sweep: CanaryRegistry = createCanaryRegistry();
  /** Everything the broker sent back, as text (bytes as latin1, so encoded forms survive). */
  const responses: string[] = [];
  const errors: string[] = [];
  /** [what was tried, expected code, actual code] for every call. */
  const outcomes: Array<[string, string, string]> = [];
  const collected = new Map<Source, string>();

  const canary = (label: string, value = makeCanary(label)): string => {
    sweep.register(label, value);
    registerCanary(label, value);
    return value;
  };

  const asText = (value: unknown): string =>
    JSON.stringify(value, (_key, v: unknown) => {
      if (v instanceof Uint8Array) return Buffer.from(v).toString("latin1");
      if (typeof v === "object" && v !== null && (v as { type?: unknown }).type === "Buffer") {
        return Buffer.from((v as { data: number[] }).data).toString("latin1");
      }
      return v;
    });
  const metadataText = (metadata: Metadata | undefined) => asText(metadata?.toJSON() ?? {});

  /** Runs one call, records its response or error, and checks it got the expected code. */
  async function attempt(
    what: string,
    expected: status,
    run: () => Promise<UnaryResult | StreamResult>,
    /** Fields that legitimately carry a credential back (a newly created caller key). */
    shownOnce: readonly string[] = [],
  ): Promise<WireMessage | undefined> {
    try {
      const result = await run();
      const message = "response" in result ? { ...result.response } : { messages: result.messages };
      for (const field of shownOnce) delete (message as Record<string, unknown>)[field];
      responses.push(asText(message), metadataText(result.headers));
      outcomes.push([what, status[expected], "OK"]);
      return "response" in result ? result.response : undefined;
    } catch (err) {
      const e = err as ServiceError;
      errors.push(`${e.code} ${e.details} ${e.message} ${metadataText(e.metadata)}`);
      outcomes.push([what, status[expected], status[e.code] ?? String(e.code)]);
      return undefined;
    }
  }

  beforeAll(async () => {
    broker = await startBroker("pglite");
    const creds = broker.upstreamCredentials;
    for (const [label, value] of Object.entries(creds)) {
      if (label !== "headerName" && label !== "queryParam") canary(`upstream ${label}`, value);
    }

    // --- identities -----------------------------------------------------------------------
    const alice = canary("alice's sub", `google-oauth2|${makeCanary("alice")}`);
    const bob = canary("bob's sub", `facebook|${makeCanary("bob")}`);
    const carol = canary("carol's sub", `auth0|${makeCanary("carol")}`);
    const email = canary("shared email", `${makeCanary("mail")}@example.com`);
    const customClaim = canary("a custom claim value");
    const appKey = canary(
      "app caller key",
      (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key,
    );
    const adminKey = canary("admin caller key", (await broker.callerKey(["admin"])).key);
    const readOnlyKey = canary("read-only caller key", (await broker.callerKey(["secrets:read"])).key);
    const revoked = await broker.callerKey(["secrets:read"]);
    canary("revoked caller key", revoked.key);
    await broker.revokeCallerKey(revoked.id);
    const expiring = canary(
      "expired caller key",
      (await broker.callerKey(["secrets:read"], { expiresAt: new Date(Date.now() + 200) })).key,
    );
    const badChecksum = canary(
      "caller key with a bad checksum",
      `${appKey.slice(0, -1)}${appKey.endsWith("A") ? "B" : "A"}`,
    );
    const token = async (label: string, sub: string, claims: Record<string, unknown> = {}) =>
      canary(label, await broker.tokenFor(sub, { email, ...claims }));
    const aliceToken = await token("alice's token", alice, { "https://app.example/claims/ref": customClaim });
    const bobToken = await token("bob's token", bob);
    const carolToken = await token("carol's token", carol);
    const as = (bearerToken: string, callerKey = appKey): GrpcCallOptions => ({ callerKey, bearerToken });
    const A = as(aliceToken);

    const secrets = broker.clients.secrets;
    const proxy = broker.clients.proxy;
    const admin = broker.clients.admin;
    const put = async (
      who: GrpcCallOptions,
      provider: string,
      label: string,
      fields: Record<string, string>,
    ) =>
      (
        (
          await attempt(`put ${label}`, status.OK, () =>
            unary(secrets, "PutSecret", { provider, label, fields }, who),
          )
        )?.secret as WireMessage | undefined
      )?.id as string;

    // --- stores and lists ------------------------------------------------------------------
    const bearerId = await put(A, "test-upstream", "saas", { token: creds.bearer });
    const binanceId = await put(A, "test-binance", "exchange", {
      api_key: creds.binanceKey,
      api_secret: creds.binanceSecret,
    });
    const githubFirst = canary("github token v1");
    const githubId = await put(A, "test-upstream", "ci", { token: githubFirst });
    await attempt("put a new version", status.OK, () =>
      unary(
        secrets,
        "PutSecret",
        { secretId: githubId, provider: "test-upstream", fields: { token: canary("github token v2") } },
        A,
      ),
    );
    const tamperedId = await put(A, "test-upstream", "to tamper", { token: canary("tampered secret") });
    await attempt("list", status.OK, () => unary(secrets, "ListSecrets", {}, A));
    await attempt("list by provider", status.OK, () =>
      unary(secrets, "ListSecrets", { provider: "test-upstream" }, A),
    );

    // --- proxied calls, including upstreams that echo, redirect and stream ------------------
    const call = (what: string, expected: status, request: WireMessage, who = A, deadlineMs?: number) =>
      attempt(what, expected, () =>
        unary(proxy, "Call", request, deadlineMs === undefined ? who : { ...who, deadlineMs }),
      );
    await call("call ok", status.OK, { secretId: bearerId, method: "GET", path: "/ok" });
    const echoed = await call("call echo", status.OK, {
      secretId: bearerId,
      method: "POST",
      path: "/echo",
      query: [{ name: "q", value: "1" }],
      body: Buffer.from('{"hello":"world"}'),
    });
    expect(Buffer.from((echoed?.body as Uint8Array | undefined) ?? []).toString()).toContain("[REDACTED]");
    await call("call binance", status.OK, { secretId: binanceId, method: "GET", path: "/api/v3/ok" });
    await call("call binance echo", status.OK, { secretId: binanceId, method: "GET", path: "/api/v3/echo" });
    await call("redirect carrying the key elsewhere", status.OK, {
      secretId: bearerId,
      method: "GET",
      path: "/redirect-other-host",
    });
    await attempt("stream a dripped echo", status.OK, () =>
      serverStream(proxy, "CallStream", { secretId: bearerId, method: "GET", path: "/echo-chunked" }, A),
    );

    // --- every failure the API can give -----------------------------------------------------
    const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
    const now = Math.floor(Date.now() / 1000);
    const list = (what: string, expected: status, who: GrpcCallOptions) =>
      attempt(what, expected, () => unary(secrets, "ListSecrets", {}, who));
    const U = status.UNAUTHENTICATED;
    await list("no caller key", U, { bearerToken: aliceToken });
    await list("bad checksum", U, as(aliceToken, badChecksum));
    await list("revoked key", U, as(aliceToken, revoked.key));
    await new Promise((resolve) => setTimeout(resolve, 250));
    await list("expired key", U, as(aliceToken, expiring));
    await list("no token", U, { callerKey: appKey });
    await list("garbage token", U, as(canary("a garbage bearer token")));
    await list(
      "expired token",
      U,
      as(await token("an expired token", alice, { exp: now - 120, iat: now - 600 })),
    );
    await list(
      "wrong audience",
      U,
      as(await token("a wrong-audience token", alice, { aud: "https://other.example/api" })),
    );
    await list(
      "wrong issuer",
      U,
      as(await token("a wrong-issuer token", alice, { iss: "https://evil.example/" })),
    );
    const aliceParts = aliceToken.split(".");
    await list(
      "bad signature",
      U,
      as(canary("a re-signed token", `${aliceParts[0]}.${aliceParts[1]}.${"A".repeat(342)}`)),
    );
    await list(
      "alg none with canary claims",
      U,
      as(
        canary(
          "an alg:none token",
          `${enc({ alg: "none", typ: "JWT" })}.${enc({ sub: alice, email, exp: now + 600 })}.`,
        ),
      ),
    );
    const jkuUrl = canary("a jku URL", `http://127.0.0.1:9/${makeCanary("jku")}`);
    await list(
      "jku header",
      U,
      as(canary("a jku token", await broker.issuer.sign({ sub: alice }, { header: { jku: jkuUrl } }))),
    );
    // An earlier token's unknown kid started the refetch cooldown: within it this kid would be
    // UNAVAILABLE (never checked against the issuer), on a fast machine every time.
    await new Promise((resolve) => setTimeout(resolve, HARNESS_JWKS_COOLDOWN_MS + 100));
    await list(
      "canary kid",
      U,
      as(
        canary(
          "a token with a canary kid",
          await broker.issuer.sign({ sub: alice }, { kid: canary("a canary kid") }),
        ),
      ),
    );
    const P = status.PERMISSION_DENIED;
    await attempt("read-only key writes", P, () =>
      unary(
        secrets,
        "PutSecret",
        { provider: "test-upstream", label: "x", fields: { token: canary("refused write") } },
        as(aliceToken, readOnlyKey),
      ),
    );
    await list(
      "machine token",
      P,
      as(await token("a machine token", `${makeCanary("m2m")}@clients`, { gty: "client-credentials" })),
    );
    await list(
      "missing permission",
      P,
      as(await token("a token without the permission", alice, { scope: "openid" })),
    );
    await call("method not allowed", P, { secretId: bearerId, method: "DELETE", path: "/ok" });
    await call(
      "another user's secret",
      status.NOT_FOUND,
      { secretId: bearerId, method: "GET", path: "/ok" },
      as(bobToken),
    );
    await call("unknown secret", status.NOT_FOUND, {
      secretId: "00000000-0000-4000-8000-000000000000",
      method: "GET",
      path: "/ok",
    });
    const I = status.INVALID_ARGUMENT;
    await call("path traversal", I, { secretId: bearerId, method: "GET", path: "/../admin" });
    await call("caller Authorization carrying a canary", I, {
      secretId: bearerId,
      method: "GET",
      path: "/ok",
      headers: [{ name: "Authorization", value: `Bearer ${canary("a caller-supplied credential")}` }],
    });
    await attempt("field value too large", I, () =>
      unary(
        secrets,
        "PutSecret",
        {
          provider: "test-upstream",
          label: "big",
          fields: { token: canary("oversized", `${makeCanary("big")}${"x".repeat(9000)}`) },
        },
        A,
      ),
    );
    await attempt("bad field name", I, () =>
      unary(
        secrets,
        "PutSecret",
        { provider: "test-upstream", label: "bad", fields: { "Bad-Name": canary("value under a bad name") } },
        A,
      ),
    );
    await attempt("duplicate label", status.ALREADY_EXISTS, () =>
      unary(
        secrets,
        "PutSecret",
        { provider: "test-upstream", label: "ci", fields: { token: canary("duplicate secret") } },
        A,
      ),
    );
    await call("huge upstream body", status.RESOURCE_EXHAUSTED, {
      secretId: bearerId,
      method: "GET",
      path: "/huge",
    });
    await call(
      "upstream hangs",
      status.DEADLINE_EXCEEDED,
      { secretId: bearerId, method: "GET", path: "/hang" },
      A,
      400,
    );
    await attempt("a key pair without its secret half", I, () =>
      unary(
        secrets,
        "PutSecret",
        { provider: "test-binance", label: "half", fields: { api_key: canary("half a key pair") } },
        A,
      ),
    );
    // A disabled master key: the first write of a new user needs GenerateDataKey, refused.
    broker.kms.disableKey("alias/keybroker");
    const dave = await token("dave's token", canary("dave's sub", `auth0|${makeCanary("dave")}`));
    await attempt("master key disabled", status.FAILED_PRECONDITION, () =>
      unary(
        secrets,
        "PutSecret",
        { provider: "test-upstream", label: "dave", fields: { token: canary("dave's secret") } },
        as(dave),
      ),
    );
    broker.kms.enableKey("alias/keybroker");
    const row = await broker.database.db
      .selectFrom("secret_versions")
      .select("ciphertext")
      .where("secret_id", "=", tamperedId)
      .executeTakeFirstOrThrow();
    const flipped = Buffer.from(row.ciphertext);
    flipped[20] = (flipped[20] ?? 0) ^ 1;
    await broker.database.db
      .updateTable("secret_versions")
      .set({ ciphertext: flipped })
      .where("secret_id", "=", tamperedId)
      .execute();
    await call("tampered ciphertext", status.DATA_LOSS, { secretId: tamperedId, method: "GET", path: "/ok" });

    // --- admin RPCs --------------------------------------------------------------------------
    const adminAuth = { callerKey: adminKey };
    const created = await attempt(
      "create caller key",
      status.OK,
      () => unary(admin, "CreateCallerKey", { name: "sweep", scopes: ["secrets:read"] }, adminAuth),
      ["key"],
    );
    canary("a caller key created over the API", String(created?.key));
    const createdId = String((created?.callerKey as WireMessage | undefined)?.id);
    const rotated = await attempt(
      "rotate caller key",
      status.OK,
      () => unary(admin, "RotateCallerKey", { id: createdId, overlapSeconds: 0 }, adminAuth),
      ["key"],
    );
    canary("a rotated caller key", String(rotated?.key));
    await attempt("list caller keys", status.OK, () => unary(admin, "ListCallerKeys", {}, adminAuth));
    await attempt("revoke caller key", status.OK, () =>
      unary(
        admin,
        "RevokeCallerKey",
        { id: String((rotated?.callerKey as WireMessage | undefined)?.id) },
        adminAuth,
      ),
    );
    await put(as(carolToken), "test-upstream", "carol", { token: canary("carol's secret") });
    await attempt("shred by subject", status.OK, () =>
      unary(admin, "ShredUser", { subject: carol }, adminAuth),
    );
    await attempt("shred an unknown subject", status.NOT_FOUND, () =>
      unary(admin, "ShredUser", { subject: canary("an unknown subject") }, adminAuth),
    );
    await attempt("query audit", status.OK, () => unary(admin, "QueryAudit", { limit: 1000 }, adminAuth));
    await attempt("verify audit", status.OK, () => unary(admin, "VerifyAudit", {}, adminAuth));
    await attempt("admin call with the app's key", P, () =>
      unary(admin, "ListCallerKeys", {}, { callerKey: appKey }),
    );

    // --- the identity provider down: UNAVAILABLE (last: it rotates the issuer's key) --------
    await broker.issuer.rotateKey();
    broker.issuer.setStatus(503);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await list("JWKS down", status.UNAVAILABLE, as(await token("a token the broker cannot check", alice)));
    broker.issuer.setStatus(null);

    collected.set("responses", responses.join("\n"));
    collected.set("errors", errors.join("\n"));
    collected.set("metrics", await (await fetch(`${broker.opsUrl}/metrics`)).text());
    collected.set("database", await dumpAllRows(broker.database.db));
    // Logs last: the calls above are all settled, and stopping flushes anything queued.
    await broker.close();
    collected.set("logs", broker.logs.text());
  }, 120_000);

  afterAll(async () => {
    await broker?.close();
  });

  it("E50 got the expected status from every call of the scenario (so the sweep covers every path it names)", () => {
    const wrong = outcomes.filter(([, expected, actual]) => expected !== actual);
    expect(wrong).toEqual([]);
    expect(new Set(outcomes.map(([, expected]) => expected)).size).toBeGreaterThanOrEqual(10);
    expect(sweep.canaries.length).toBeGreaterThan(40);
  });

  it.each<Source>(["logs", "responses", "errors", "metrics", "database"])(
    "E50 finds no canary secret, token, caller key or subject, in any encoding, in the broker's %s",
    (source) => {
      const text = collected.get(source) ?? "";
      expect(text.length).toBeGreaterThan(100);
      expect(describeLeaks(sweep.scan(source, text))).toBe("");
    },
  );

  it.each<Source>(["logs", "responses", "errors", "metrics", "database"])(
    "E50 finds no JWT, no valid caller key and no canary marker at all in the broker's %s",
    (source) => {
      expect(describeLeaks(structuralLeaks(source, collected.get(source) ?? ""))).toBe("");
    },
  );

  it("E50 the sweep itself finds a canary in every encoding it claims to catch", () => {
    const probe = createCanaryRegistry();
    const value = probe.register("probe", makeCanary("probe"));
    const bytes = Buffer.from(value);
    for (const form of [
      value,
      bytes.toString("base64"),
      bytes.toString("base64url"),
      bytes.toString("hex"),
      bytes.toString("hex").toUpperCase(),
      encodeURIComponent(`|${value}`),
      Buffer.from(`xy${value}z`).toString("base64"),
    ]) {
      expect(probe.scan("probe", `before ${form} after`).length).toBeGreaterThan(0);
    }
    expect(probe.scan("probe", "nothing to see here")).toEqual([]);
  });
});
