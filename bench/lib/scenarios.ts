import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Client, credentials, Metadata } from "@grpc/grpc-js";
import { Agent, request } from "undici";
import { ProxyService } from "../../src/gen/keybroker/v1/proxy_pb.js";
import { SecretService } from "../../src/gen/keybroker/v1/secrets_pb.js";
import { createGrpcClients, unary, type WireMessage } from "../../test/support/grpc-client.js";
import type { BareProxyProcess } from "./bare-proxy-process.js";
import type { BrokerProcess } from "./broker-process.js";

export type ScenarioName =
  | "health"
  | "list"
  | "proxy"
  | "connectList"
  | "connectProxy"
  | "direct"
  | "bare"
  | "connectBare";

/** One call of each hot-path scenario against a running broker, for one bench user. */
export type ScenarioCalls = Record<ScenarioName, () => Promise<unknown>> & {
  readonly secretId: string;
  close(): void;
};

/**
 * Stores one secret for a bench user, then returns a call per scenario: grpc-js (as the main
 * app calls) and Connect, each hitting the broker's cached hot path; `direct` is the same
 * upstream request made with undici, without the broker; `bare` and `connectBare` are the same
 * Call RPC (same clients, same metadata) to the bare proxy floor, when one is given.
 */
export async function createScenarioCalls(
  broker: BrokerProcess,
  sub = "auth0|bench-user",
  bare?: Pick<BareProxyProcess, "grpcAddress" | "connectUrl">,
): Promise<ScenarioCalls> {
  // An hour: a full run on a busy machine outlasts the issuer's 5-minute default.
  const token = await broker.issuer.sign({ sub }, { expiresInSec: 3600 });
  const auth = { callerKey: broker.callerKey, bearerToken: token };
  const grpc = createGrpcClients(broker.grpcAddress);
  const put = await unary(
    grpc.secrets,
    "PutSecret",
    { provider: "bench-upstream", label: "bench", fields: { token: broker.upstreamCredentials.bearer } },
    auth,
  );
  const secretId = (put.response.secret as WireMessage).id as string;
  const proxyRequest = { secretId, method: "GET", path: "/ok" };

  // grpc.health.v1 Check: a trivial handler on the broker's own grpc-js server.
  const raw = new Client(broker.grpcAddress, credentials.createInsecure());
  const identity = (b: Buffer) => b;
  const health = () =>
    new Promise((resolve, reject) =>
      raw.makeUnaryRequest(
        "/grpc.health.v1.Health/Check",
        identity,
        identity,
        Buffer.alloc(0),
        new Metadata(),
        {},
        (err, res) => (err ? reject(err) : resolve(res)),
      ),
    );

  const connectTransport = createConnectTransport({ baseUrl: broker.connectUrl, httpVersion: "2" });
  const connectSecrets = createClient(SecretService, connectTransport);
  const connectProxy = createClient(ProxyService, connectTransport);
  const headers = { "x-keybroker-key": broker.callerKey, authorization: `Bearer ${token}` };

  const upstream = new Agent({ connect: { ca: broker.upstream.ca } });
  const direct = async () => {
    const res = await request(`https://127.0.0.1:${broker.upstream.port}/bearer/ok`, {
      dispatcher: upstream,
      headers: { authorization: `Bearer ${broker.upstreamCredentials.bearer}` },
    });
    await res.body.arrayBuffer();
  };

  const bareGrpc = bare === undefined ? undefined : createGrpcClients(bare.grpcAddress);
  const bareConnect =
    bare === undefined
      ? undefined
      : createClient(ProxyService, createConnectTransport({ baseUrl: bare.connectUrl, httpVersion: "2" }));
  const noBare = () => Promise.reject(new Error("no bare proxy was started"));

  return {
    secretId,
    health,
    list: () => unary(grpc.secrets, "ListSecrets", {}, auth),
    proxy: () => unary(grpc.proxy, "Call", proxyRequest, auth),
    connectList: () => connectSecrets.listSecrets({}, { headers }),
    connectProxy: () => connectProxy.call(proxyRequest, { headers }),
    direct,
    bare: bareGrpc === undefined ? noBare : () => unary(bareGrpc.proxy, "Call", proxyRequest, auth),
    connectBare: bareConnect === undefined ? noBare : () => bareConnect.call(proxyRequest, { headers }),
    close() {
      grpc.close();
      bareGrpc?.close();
      raw.close();
      void upstream.close();
    },
  };
}
