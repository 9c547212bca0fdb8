import type { CallerScope } from "../../src/auth/identity.js";
import type { WireMessage } from "./grpc-client.js";

/**
 * Every user-scoped RPC the broker serves, with the scope it needs and a valid request.
 * test/e2e/every-rpc.e2e.test.ts checks this list against the service descriptors, so a
 * new RPC cannot ship without going through the shared credential and cross-user suite.
 */
export interface RpcCase {
  readonly service: "secrets" | "proxy";
  /** Fully qualified, e.g. "keybroker.v1.SecretService/ListSecrets". */
  readonly path: string;
  readonly method: string;
  readonly scope: CallerScope;
  readonly streaming: boolean;
  /** A valid request; `secretId` is one of the calling user's secrets (or another user's, for I4). */
  request(secretId: string): WireMessage;
  /** Whether the request names a secret, so another user's id must give NOT_FOUND (I4). */
  readonly namesSecret: boolean;
}

export const USER_RPCS: readonly RpcCase[] = [
  {
    service: "secrets",
    path: "keybroker.v1.SecretService/PutSecret",
    method: "PutSecret",
    scope: "secrets:write",
    streaming: false,
    namesSecret: true,
    request: (secretId) => ({
      secretId,
      provider: "test-upstream",
      label: "",
      fields: { token: "rpc-catalogue-token-value-0001" },
    }),
  },
  {
    service: "secrets",
    path: "keybroker.v1.SecretService/ListSecrets",
    method: "ListSecrets",
    scope: "secrets:read",
    streaming: false,
    namesSecret: false,
    request: () => ({}),
  },
  {
    service: "secrets",
    path: "keybroker.v1.SecretService/DeleteSecret",
    method: "DeleteSecret",
    scope: "secrets:write",
    streaming: false,
    namesSecret: true,
    request: (secretId) => ({ secretId }),
  },
  {
    service: "secrets",
    path: "keybroker.v1.SecretService/ListSecretUses",
    method: "ListSecretUses",
    scope: "secrets:read",
    streaming: false,
    namesSecret: true,
    request: (secretId) => ({ secretId, pageSize: 10 }),
  },
  {
    service: "secrets",
    path: "keybroker.v1.SecretService/InspectSecret",
    method: "InspectSecret",
    scope: "secrets:write",
    streaming: false,
    namesSecret: true,
    request: (secretId) => ({ secretId }),
  },
  {
    service: "proxy",
    path: "keybroker.v1.ProxyService/Call",
    method: "Call",
    scope: "proxy:call",
    streaming: false,
    namesSecret: true,
    request: (secretId) => ({ secretId, method: "GET", path: "/ok" }),
  },
  {
    service: "proxy",
    path: "keybroker.v1.ProxyService/CallStream",
    method: "CallStream",
    scope: "proxy:call",
    streaming: true,
    namesSecret: true,
    request: (secretId) => ({ secretId, method: "GET", path: "/ok" }),
  },
];
