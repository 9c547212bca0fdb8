import { type ServiceError, status } from "@grpc/grpc-js";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../src/gen/keybroker/v1/admin_pb.js";
import { ConnectionService } from "../../src/gen/keybroker/v1/connections_pb.js";
import { PinService } from "../../src/gen/keybroker/v1/pin_pb.js";
import { ProxyService } from "../../src/gen/keybroker/v1/proxy_pb.js";
import { SecretService } from "../../src/gen/keybroker/v1/secrets_pb.js";
import { SessionService } from "../../src/gen/keybroker/v1/sessions_pb.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { type GrpcCallOptions, serverStream, unary, type WireMessage } from "../support/grpc-client.js";
import { describeLeaks, registerCanary, structuralLeaks } from "../support/leak-sweep.js";

/**
 * Catalogue F51 as a property over every RPC of SecretService, ProxyService and AdminService:
 * random field values (mixed with valid ones, so validation is passed often enough to reach the
 * domain code behind it), sent through the real broker by a grpc-js client with both
 * credentials, get a definite client-side answer — never INTERNAL or UNKNOWN (an unhandled
 * input), and never a hang: every call settles before its deadline.
 */

const DEFINITE = new Set<number>([
  status.OK,
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.PERMISSION_DENIED,
  status.RESOURCE_EXHAUSTED,
]);
const DEADLINE_MS = 10_000;
const RUNS_PER_RPC = 40;
const USER = "auth0|rpc-property-user-canary";

/** A string that is sometimes valid for the field and otherwise anything at all. */
const text = (...valid: string[]) =>
  fc.oneof(
    { weight: 3, arbitrary: valid.length > 0 ? fc.constantFrom(...valid) : fc.constant("") },
    { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 20 }) },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 20 }) },
    { weight: 1, arbitrary: fc.constantFrom("", " ", "\n", "\u0000", "x".repeat(9_000), "../../etc/passwd") },
  );
const uint32 = fc.oneof(
  fc.constantFrom(0, 1, 30, 3650, 2 ** 31 - 1, 2 ** 32 - 1),
  fc.integer({ min: 0, max: 2 ** 32 - 1 }),
);
const uint64 = fc.oneof(
  fc.constantFrom(0n, 1n, 2n ** 53n, 2n ** 63n - 1n, 2n ** 63n, 2n ** 64n - 1n),
  fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
);
const timestamp = fc.record({
  seconds: fc
    .oneof(
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      fc.bigInt({ min: -62_135_596_800n, max: 253_402_300_799n }),
      fc.constantFrom(0n, -1n, 1_700_000_000n),
    )
    .map(String),
  nanos: fc.oneof(
    fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
    fc.integer({ min: 0, max: 999_999_999 }),
  ),
});
const pairs = (names: string[]) =>
  fc.array(fc.record({ name: text(...names), value: text("1", "application/json", "GET") }), {
    maxLength: 6,
  });
const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString("hex"));

describe("F51 every RPC answers random input with a definite status, through the real broker", () => {
  let broker: BrokerHarness;
  let userAuth: GrpcCallOptions;
  let connectAuth: GrpcCallOptions;
  let adminAuth: GrpcCallOptions;
  let sessionAuth: GrpcCallOptions;
  let ownSessionAuth: GrpcCallOptions;
  let pinUserAuth: GrpcCallOptions;
  let bearerSecretId: string;
  let binanceSecretId: string;

  beforeAll(async () => {
    broker = await startBroker("pglite");
    const appKey = registerCanary(
      "app caller key",
      (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key,
    );
    const adminKey = registerCanary("admin caller key", (await broker.callerKey(["admin"])).key);
    const token = registerCanary("user token", await broker.tokenFor(USER));
    userAuth = { callerKey: appKey, bearerToken: token, deadlineMs: DEADLINE_MS };
    const connectKey = registerCanary("connect caller key", (await broker.callerKey(["oauth:connect"])).key);
    connectAuth = { callerKey: connectKey, bearerToken: token, deadlineMs: DEADLINE_MS };
    adminAuth = { callerKey: adminKey, deadlineMs: DEADLINE_MS };
    const sessionKey = registerCanary("session caller key", (await broker.callerKey(["session:end"])).key);
    sessionAuth = { callerKey: sessionKey, deadlineMs: DEADLINE_MS };
    // EndOwnSessions really ends the sessions of the user it names: its own user, so the
    // other cases keep a live token.
    const ownToken = registerCanary("own-sessions token", await broker.tokenFor(`${USER}-sessions`));
    ownSessionAuth = { callerKey: sessionKey, bearerToken: ownToken, deadlineMs: DEADLINE_MS };
    // SetPin may really set a PIN (and lock the sessions) of the user it names: its own user too.
    const pinToken = registerCanary("pin user token", await broker.tokenFor(`${USER}-pin`));
    pinUserAuth = { callerKey: appKey, bearerToken: pinToken, deadlineMs: DEADLINE_MS };
    const put = async (provider: string, fields: Record<string, string>) => {
      const { response } = await unary(
        broker.clients.secrets,
        "PutSecret",
        { provider, label: `fixed ${provider}`, fields },
        userAuth,
      );
      return (response.secret as WireMessage).id as string;
    };
    const creds = broker.upstreamCredentials;
    bearerSecretId = await put("test-upstream", { token: creds.bearer });
    binanceSecretId = await put("test-binance", {
      api_key: creds.binanceKey,
      api_secret: creds.binanceSecret,
    });
  });

  afterAll(async () => {
    await broker?.close();
    // The random requests put tokens and caller keys through every error path: none is logged.
    const leaks = structuralLeaks("broker logs", broker.logs.text());
    expect(describeLeaks(leaks)).toBe("");
  });

  const secretIdArb = () =>
    fc.oneof(
      { weight: 2, arbitrary: fc.constantFrom(bearerSecretId, binanceSecretId) },
      { weight: 1, arbitrary: fc.uuid() },
      { weight: 1, arbitrary: text() },
    );

  const proxyRequest = () =>
    fc.record({
      secretId: secretIdArb(),
      method: text("GET", "POST", "PUT", "DELETE", "get"),
      path: text("/ok", "/echo", "/x/../ok", "//evil.test/x", "/a%2fb", "/api/v3/account"),
      query: pairs(["a", "signature", "timestamp", "api_key"]),
      headers: pairs(["x-test", "authorization", "host", "content-type", "X-MBX-APIKEY", "cookie"]),
      body: fc.oneof(
        fc.constant(Buffer.alloc(0)),
        fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)),
      ),
    });

  /** Each RPC with its generator; the admin ones never name an existing key or user. */
  const CASES: Record<
    string,
    {
      client: () => BrokerHarness["clients"]["secrets"];
      arb: () => fc.Arbitrary<WireMessage>;
      /** Boundary values that always run first, so a failure on them is never left to chance. */
      examples?: WireMessage[];
      admin?: true;
      /** Called with the session:end caller key (and, for EndOwnSessions, its own user's token). */
      auth?: () => GrpcCallOptions;
      /** Codes that are a definite, correct answer for this RPC only, and why. */
      alsoDefinite?: readonly number[];
      stream?: true;
    }
  > = {
    "keybroker.v1.SecretService/PutSecret": {
      client: () => broker.clients.secrets,
      arb: () =>
        fc.record({
          secretId: fc.oneof(fc.constant(""), fc.uuid(), text()),
          provider: text("test-upstream", "github", "binance", "test-binance"),
          label: text("main", "Main account", "a\nb", "x".repeat(65)),
          fields: fc.dictionary(text("token", "api_key", "api_secret"), text("value-0123456789"), {
            maxKeys: 10,
          }),
        }),
    },
    "keybroker.v1.SecretService/ListSecrets": {
      client: () => broker.clients.secrets,
      arb: () =>
        fc.record({
          provider: text("test-upstream", "binance"),
          pageSize: uint32,
          // Real-looking tokens too: a secrets list's ("s1."), a caller-key list's ("k1.").
          pageToken: fc.oneof(fc.constant(""), text("czEuMS54", "azEuMS5ja194", "s1.1.x")),
        }),
      examples: [{ provider: "", pageSize: 2 ** 32 - 1, pageToken: "" }],
    },
    "keybroker.v1.SecretService/DeleteSecret": {
      client: () => broker.clients.secrets,
      arb: () => fc.record({ secretId: fc.oneof(fc.uuid(), text()) }),
    },
    "keybroker.v1.SecretService/ListSecretUses": {
      client: () => broker.clients.secrets,
      arb: () =>
        fc.record({
          secretId: fc.oneof(fc.uuid(), text()),
          pageSize: uint32,
          pageToken: fc.oneof(fc.constant(""), text("dTEuMQ", "dTEuMA", "u1.5")),
        }),
      examples: [{ secretId: "00000000-0000-4000-8000-000000000000", pageSize: 2 ** 32 - 1, pageToken: "" }],
    },
    "keybroker.v1.SecretService/InspectSecret": {
      client: () => broker.clients.secrets,
      arb: () => fc.record({ secretId: secretIdArb() }),
    },
    "keybroker.v1.SessionService/EndSession": {
      client: () => broker.clients.sessions,
      auth: () => sessionAuth,
      // This broker sets no KEYBROKER_LOGOUT_AUDIENCES: logout tokens are not accepted at all.
      alsoDefinite: [status.FAILED_PRECONDITION],
      arb: () => fc.record({ logoutToken: text("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", "a.b.c", "..") }),
    },
    "keybroker.v1.SessionService/EndOwnSessions": {
      client: () => broker.clients.sessions,
      auth: () => ownSessionAuth,
      // The first call ends the user's sessions: the same token is then refused (session ended).
      alsoDefinite: [status.UNAUTHENTICATED],
      arb: () => fc.constant({}),
    },
    "keybroker.v1.PinService/SetPin": {
      client: () => broker.clients.pins,
      auth: () => pinUserAuth,
      // Once a PIN is set, changing it needs the current one; a lockout is a precondition too.
      alsoDefinite: [status.FAILED_PRECONDITION],
      arb: () => fc.record({ pin: text("1234", "correct horse", ""), currentPin: text("", "1234") }),
      examples: [
        { pin: "x".repeat(129), currentPin: "" },
        { pin: "\u0000\u0000\u0000\u0000", currentPin: "" },
      ],
    },
    "keybroker.v1.PinService/UnlockSession": {
      client: () => broker.clients.pins,
      auth: () => pinUserAuth,
      // Unlocking a user who has no PIN, or is locked out, is a precondition failure.
      alsoDefinite: [status.FAILED_PRECONDITION],
      arb: () => fc.record({ pin: text("1234", "correct horse", "") }),
    },
    "keybroker.v1.ConnectionService/StartConnection": {
      client: () => broker.clients.connections,
      auth: () => connectAuth,
      // This broker has no public listener configured: OAuth connections are off.
      alsoDefinite: [status.FAILED_PRECONDITION],
      arb: () =>
        fc.record({
          provider: text("github-oauth", "google", "test-upstream"),
          scopes: fc.array(text("repo", "read:user", "openid"), { maxLength: 5 }),
          returnUrl: text("https://app.example/connected", "javascript:alert(1)", ""),
          secretId: fc.oneof(fc.constant(""), fc.uuid(), text()),
          label: text("", "GitHub", "x".repeat(65)),
        }),
    },
    "keybroker.v1.ProxyService/Call": { client: () => broker.clients.proxy, arb: proxyRequest },
    "keybroker.v1.ProxyService/CallStream": {
      client: () => broker.clients.proxy,
      arb: proxyRequest,
      stream: true,
    },
    "keybroker.v1.AdminService/CreateCallerKey": {
      client: () => broker.clients.admin,
      admin: true,
      arb: () =>
        fc.record({
          name: text("reporting", "main app"),
          scopes: fc.array(text("secrets:read", "secrets:write", "proxy:call", "admin"), { maxLength: 5 }),
          expiresInDays: uint32,
        }),
      examples: [
        { name: "reporting", scopes: ["secrets:read"], expiresInDays: 3650 },
        { name: "reporting", scopes: ["secrets:read"], expiresInDays: 2 ** 32 - 1 },
      ],
    },
    "keybroker.v1.AdminService/ListCallerKeys": {
      client: () => broker.clients.admin,
      admin: true,
      arb: () =>
        fc.record({
          pageSize: uint32,
          pageToken: fc.oneof(fc.constant(""), text("azEuMS5ja194", "czEuMS54", "k1.1.ck_x")),
        }),
      examples: [{ pageSize: 2 ** 32 - 1, pageToken: "" }],
    },
    "keybroker.v1.AdminService/RevokeCallerKey": {
      client: () => broker.clients.admin,
      admin: true,
      arb: () => fc.record({ id: fc.oneof(fc.constant("ck_0000000000000000"), text()) }),
      examples: [{ id: "\u0000" }],
    },
    "keybroker.v1.AdminService/RotateCallerKey": {
      client: () => broker.clients.admin,
      admin: true,
      arb: () =>
        fc.record({ id: fc.oneof(fc.constant("ck_0000000000000000"), text()), overlapSeconds: uint32 }),
      examples: [{ id: "\u0000", overlapSeconds: 0 }],
    },
    "keybroker.v1.AdminService/ShredUser": {
      client: () => broker.clients.admin,
      admin: true,
      arb: () =>
        fc.oneof(
          fc.record({ userRef: fc.oneof(hex64, text()) }),
          fc.record({ subject: text("auth0|someone-else") }),
          fc.constant({}),
        ),
    },
    "keybroker.v1.AdminService/QueryAudit": {
      client: () => broker.clients.admin,
      admin: true,
      arb: () =>
        fc.record(
          {
            userRef: fc.oneof(fc.constant(""), hex64, text()),
            action: text("secret.put", "proxy.call"),
            callerKeyId: fc.oneof(fc.constant(""), text("ck_0000000000000000")),
            since: timestamp,
            until: timestamp,
            limit: uint32,
            afterSeq: uint64.map(String),
          },
          { requiredKeys: ["limit"] },
        ),
      examples: [
        { limit: 1, afterSeq: "18446744073709551615" },
        { limit: 1, since: { seconds: "253402300800", nanos: 0 } },
        { limit: 1, until: { seconds: "-62135596801", nanos: 0 } },
        { limit: 1, action: "\u0000" },
      ],
    },
    "keybroker.v1.AdminService/VerifyAudit": {
      client: () => broker.clients.admin,
      admin: true,
      arb: () => fc.constant({}),
    },
  };

  it("F51 has a generator for every method of every service", () => {
    const served = [
      SecretService,
      ProxyService,
      AdminService,
      SessionService,
      PinService,
      ConnectionService,
    ].flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));
    expect(Object.keys(CASES).sort()).toEqual(served.sort());
  });

  it.each(Object.keys(CASES))(
    "F51 %s answers random field values with OK or a definite client-side status, before its deadline",
    async (path) => {
      const rpc = CASES[path];
      if (rpc === undefined) throw new Error(`no case for ${path}`);
      const method = path.split("/")[1] ?? "";
      const counts = new Map<number, number>();
      await fc.assert(
        fc.asyncProperty(rpc.arb(), async (request) => {
          const options = rpc.auth?.() ?? (rpc.admin ? adminAuth : userAuth);
          const started = Date.now();
          const call = rpc.stream
            ? serverStream(rpc.client(), method, request, options)
            : unary(rpc.client(), method, request, options);
          const code = await call.then(
            () => status.OK,
            (err: ServiceError) => err.code,
          );
          counts.set(code, (counts.get(code) ?? 0) + 1);
          expect(Date.now() - started).toBeLessThan(DEADLINE_MS);
          expect(status[code]).toBeOneOf([...DEFINITE, ...(rpc.alsoDefinite ?? [])].map((c) => status[c]));
        }),
        { numRuns: RUNS_PER_RPC, examples: (rpc.examples ?? []).map((example) => [example]) },
      );
      // Random input must be refused as the caller's fault at least sometimes, or the generator
      // never left the happy path (no-input RPCs excepted).
      const fieldless =
        path.endsWith("ListCallerKeys") || path.endsWith("VerifyAudit") || path.endsWith("EndOwnSessions");
      if (!fieldless) expect(counts.get(status.OK) ?? 0).toBeLessThan(RUNS_PER_RPC);
    },
    120_000,
  );
});
