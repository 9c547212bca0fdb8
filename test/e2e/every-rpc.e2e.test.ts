import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ProxyService } from "../../src/gen/keybroker/v1/proxy_pb.js";
import { SecretService } from "../../src/gen/keybroker/v1/secrets_pb.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";
import {
  asServiceError,
  type GrpcCallOptions,
  serverStream,
  unary,
  type WireMessage,
} from "../support/grpc-client.js";
import { type RpcCase, USER_RPCS } from "../support/rpc-catalogue.js";
import { describeOnEachDatabase } from "../support/test-database.js";

/**
 * The shared security suite (SPEC I3, I4): every user-scoped RPC, with each credential
 * missing, wrong or insufficient, and with another user's secret id.
 */
const OWNER = "auth0|every-rpc-owner-canary";
const OTHER = "auth0|every-rpc-other-canary";

function unsignedToken(): string {
  const enc = (v: unknown) => Buffer.from(JSON.stringify(v)).toString("base64url");
  return `${enc({ alg: "none", typ: "JWT" })}.${enc({ sub: OWNER, exp: Math.floor(Date.now() / 1000) + 600 })}.`;
}

describe("the RPC catalogue", () => {
  it("lists every method of every user-facing service, so none skips the shared suite", () => {
    const served = [SecretService, ProxyService].flatMap((s) =>
      s.methods.map((m) => `${s.typeName}/${m.name}`),
    );
    expect(USER_RPCS.map((r) => r.path).sort()).toEqual(served.sort());
  });
});

describeOnEachDatabase("every user RPC on %s", (kind) => {
  let broker: BrokerHarness;
  let fullKey: string;
  let ownerToken: string;
  let otherToken: string;
  let ownerSecretId: string;
  const tokens: string[] = [];

  beforeAll(async () => {
    broker = await startBroker(kind);
    fullKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    ownerToken = await broker.tokenFor(OWNER);
    otherToken = await broker.tokenFor(OTHER);
    tokens.push(ownerToken, otherToken);
  });

  afterAll(async () => {
    await broker.close();
    expect(findLeaks(broker.logs.text(), [OWNER, OTHER, fullKey, ...tokens])).toEqual([]);
  });

  async function newOwnerSecret(): Promise<string> {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      {
        provider: "test-upstream",
        label: `s-${Math.random().toString(36).slice(2)}`,
        fields: { token: broker.upstreamCredentials.bearer },
      },
      { callerKey: fullKey, bearerToken: ownerToken },
    );
    return (response.secret as WireMessage).id as string;
  }

  async function invoke(rpc: RpcCase, secretId: string, options: GrpcCallOptions): Promise<number> {
    const client = rpc.service === "secrets" ? broker.clients.secrets : broker.clients.proxy;
    const run = rpc.streaming
      ? serverStream(client, rpc.method, rpc.request(secretId), options)
      : unary(client, rpc.method, rpc.request(secretId), options);
    return run.then(
      () => status.OK,
      (err: unknown) => asServiceError(err).code,
    );
  }

  describe.each(USER_RPCS.map((rpc) => [rpc.path, rpc] as const))("%s", (_path, rpc) => {
    beforeAll(async () => {
      ownerSecretId = await newOwnerSecret();
    });

    it("succeeds with both credentials and the right scope", async () => {
      expect(await invoke(rpc, ownerSecretId, { callerKey: fullKey, bearerToken: ownerToken })).toBe(
        status.OK,
      );
      // DeleteSecret consumed it: later cases need a live one.
      ownerSecretId = await newOwnerSecret();
    });

    it("is UNAUTHENTICATED without a caller key", async () => {
      expect(await invoke(rpc, ownerSecretId, { bearerToken: ownerToken })).toBe(status.UNAUTHENTICATED);
    });

    it("is UNAUTHENTICATED with a caller key whose checksum is wrong", async () => {
      const broken = `${fullKey.slice(0, -1)}${fullKey.endsWith("A") ? "B" : "A"}`;
      expect(await invoke(rpc, ownerSecretId, { callerKey: broken, bearerToken: ownerToken })).toBe(
        status.UNAUTHENTICATED,
      );
    });

    it("is UNAUTHENTICATED without a user token (B16)", async () => {
      expect(await invoke(rpc, ownerSecretId, { callerKey: fullKey })).toBe(status.UNAUTHENTICATED);
    });

    it("is UNAUTHENTICATED with an alg:none token", async () => {
      const code = await invoke(rpc, ownerSecretId, { callerKey: fullKey, bearerToken: unsignedToken() });
      expect(code).toBe(status.UNAUTHENTICATED);
    });

    it("is PERMISSION_DENIED for a caller key without its scope (B21)", async () => {
      const others = (["secrets:read", "secrets:write", "proxy:call"] as const).filter(
        (s) => s !== rpc.scope,
      );
      const { key } = await broker.callerKey(others);
      expect(await invoke(rpc, ownerSecretId, { callerKey: key, bearerToken: ownerToken })).toBe(
        status.PERMISSION_DENIED,
      );
    });

    it("is PERMISSION_DENIED for a machine token (A9)", async () => {
      const m2m = await broker.tokenFor("svc@clients", { gty: "client-credentials" });
      tokens.push(m2m);
      expect(await invoke(rpc, ownerSecretId, { callerKey: fullKey, bearerToken: m2m })).toBe(
        status.PERMISSION_DENIED,
      );
    });

    it("is PERMISSION_DENIED for a token without the required permission (A11)", async () => {
      const weak = await broker.tokenFor(OWNER, { scope: `${broker.issuer.permission}X openid` });
      tokens.push(weak);
      expect(await invoke(rpc, ownerSecretId, { callerKey: fullKey, bearerToken: weak })).toBe(
        status.PERMISSION_DENIED,
      );
    });

    // Only RPCs that take a secret id have a cross-user case (ListSecrets is covered in secrets.e2e).
    if (rpc.namesSecret)
      it("I4 is NOT_FOUND for another user's secret id, exactly as for an unknown id", async () => {
        const other = await invoke(rpc, ownerSecretId, { callerKey: fullKey, bearerToken: otherToken });
        const unknown = await invoke(rpc, "00000000-0000-4000-8000-000000000000", {
          callerKey: fullKey,
          bearerToken: ownerToken,
        });
        expect(other).toBe(status.NOT_FOUND);
        expect(unknown).toBe(status.NOT_FOUND);
      });
  });
});
