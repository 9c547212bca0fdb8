import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createKeybrokerClient, UnauthenticatedError } from "../../client/keybroker-client.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.js";
import { SecretService } from "../../src/gen/keybroker/v1/secrets_pb.js";
import { type BrokerHarness, type BrokerReplica, startBroker } from "../support/broker-harness.js";
import { createDpopKey, type DpopKey } from "../support/dpop-keys.js";
import { asServiceError, type GrpcClients, unary } from "../support/grpc-client.js";
import { describeOnEachDatabase } from "../support/test-database.js";

// The broker's canonical DPoP origin: proofs name it, whatever address the call really went to
// (the main app may reach the broker through a load balancer or a mesh).
const ORIGIN = "https://keybroker.test";
const LIST = "/keybroker.v1.SecretService/ListSecrets";
const PUT = "/keybroker.v1.SecretService/PutSecret";

describeOnEachDatabase("DPoP sender-constrained tokens over real gRPC (issue 14, %s)", (kind) => {
  let broker: BrokerHarness;
  let other: BrokerReplica;
  let callerKey: string;
  let key: DpopKey;

  beforeAll(async () => {
    broker = await startBroker(kind, { KEYBROKER_DPOP_HTU_ORIGIN: ORIGIN });
    other = await broker.replica();
    callerKey = (await broker.callerKey(["secrets:read", "secrets:write"])).key;
    key = await createDpopKey();
  }, 60_000);
  afterAll(async () => {
    await broker?.close();
  });

  const boundToken = (sub: string, jkt = key.jkt) => broker.tokenFor(sub, { cnf: { jkt } });
  const proofFor = (token: string, path = LIST) => key.proof({ htu: `${ORIGIN}${path}`, accessToken: token });

  const list = (clients: GrpcClients, token: string, proof?: string) =>
    unary(
      clients.secrets,
      "ListSecrets",
      {},
      { callerKey, bearerToken: token, ...(proof === undefined ? {} : { metadata: [["dpop", proof]] }) },
    );

  async function refusalOf(call: Promise<unknown>): Promise<{ code: number; reason: string | undefined }> {
    try {
      await call;
    } catch (err) {
      const e = asServiceError(err);
      const bin = e.metadata.get("grpc-status-details-bin")[0];
      const info =
        bin instanceof Buffer
          ? fromBinary(StatusSchema, bin)
              .details.map((d) => anyUnpack(d, ErrorInfoSchema))
              .find((i) => i !== undefined)
          : undefined;
      return { code: e.code, reason: info?.reason };
    }
    return { code: status.OK, reason: undefined };
  }

  const refused = (reason: string) => ({ code: status.UNAUTHENTICATED, reason });

  it("I143 grpc-js: a bound token with a correct proof passes; without a proof, replayed, for another RPC or for another token it is refused", async () => {
    const token = await boundToken("auth0|dpop-e2e-1");
    const otherToken = await boundToken("auth0|dpop-e2e-1b");
    const proof = await proofFor(token);
    expect((await list(broker.clients, token, proof)).response.secrets).toEqual([]);

    expect(await refusalOf(list(broker.clients, token))).toEqual(refused("DPOP_PROOF_MISSING"));
    expect(await refusalOf(list(broker.clients, token, proof))).toEqual(refused("DPOP_PROOF_REPLAYED"));
    expect(await refusalOf(list(broker.clients, token, await proofFor(token, PUT)))).toEqual(
      refused("DPOP_PROOF_INVALID"),
    );
    expect(await refusalOf(list(broker.clients, token, await proofFor(otherToken)))).toEqual(
      refused("DPOP_PROOF_INVALID"),
    );
    // A stolen token with the thief's own key: the thumbprint does not match the binding.
    const thief = await createDpopKey();
    const stolen = await thief.proof({ htu: `${ORIGIN}${LIST}`, accessToken: token });
    expect(await refusalOf(list(broker.clients, token, stolen))).toEqual(refused("DPOP_PROOF_INVALID"));
    // And the refusals did not use up the token: a fresh proof passes.
    expect((await list(broker.clients, token, await proofFor(token))).response.secrets).toEqual([]);
  });

  it("I144 a proof accepted by one replica is refused as replayed by the other (jti unique across replicas)", async () => {
    const token = await boundToken("auth0|dpop-e2e-2");
    const proof = await proofFor(token);
    expect((await list(other.clients, token, proof)).response.secrets).toEqual([]);
    expect(await refusalOf(list(broker.clients, token, proof))).toEqual(refused("DPOP_PROOF_REPLAYED"));
    expect(await refusalOf(list(other.clients, token, proof))).toEqual(refused("DPOP_PROOF_REPLAYED"));
  });

  it("I143 Connect: the `dpop` header is read the same way; a missing or replayed proof is refused, a correct one passes", async () => {
    const secrets = createClient(
      SecretService,
      createConnectTransport({ baseUrl: broker.connectUrl, httpVersion: "1.1" }),
    );
    const token = await boundToken("auth0|dpop-e2e-3");
    const headers = (proof?: string) => ({
      "x-keybroker-key": callerKey,
      authorization: `Bearer ${token}`,
      ...(proof === undefined ? {} : { dpop: proof }),
    });
    const reasonOf = (call: Promise<unknown>) =>
      call.then(
        () => undefined,
        (e: unknown) => {
          const err = ConnectError.from(e);
          return { code: err.code, reason: err.findDetails(ErrorInfoSchema)[0]?.reason };
        },
      );
    const proof = await proofFor(token);
    expect((await secrets.listSecrets({}, { headers: headers(proof) })).secrets).toEqual([]);
    expect(await reasonOf(secrets.listSecrets({}, { headers: headers() }))).toEqual({
      code: Code.Unauthenticated,
      reason: "DPOP_PROOF_MISSING",
    });
    expect(await reasonOf(secrets.listSecrets({}, { headers: headers(proof) }))).toEqual({
      code: Code.Unauthenticated,
      reason: "DPOP_PROOF_REPLAYED",
    });
  });

  it("the client sends the proof it is given as `dpop`, and reports a refusal's reason", async () => {
    const client = createKeybrokerClient({ address: broker.grpcAddress, callerKey });
    try {
      const token = await boundToken("auth0|dpop-e2e-4");
      await expect(client.listSecrets(token, {}, { dpopProof: await proofFor(token) })).resolves.toEqual([]);
      const err = await client.listSecrets(token).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnauthenticatedError);
      expect((err as UnauthenticatedError).reason).toBe("dpop_proof_missing");
    } finally {
      client.close();
    }
  });

  it("an unbound token still works when DPoP is not required", async () => {
    const token = await broker.tokenFor("auth0|dpop-e2e-5");
    expect((await list(broker.clients, token)).response.secrets).toEqual([]);
  });
});

describeOnEachDatabase("DPoP required for every token (issue 14, %s)", (kind) => {
  let broker: BrokerHarness;
  let callerKey: string;

  beforeAll(async () => {
    broker = await startBroker(kind, { KEYBROKER_DPOP_HTU_ORIGIN: ORIGIN, KEYBROKER_DPOP_REQUIRED: "1" });
    callerKey = (await broker.callerKey(["secrets:read"])).key;
  }, 60_000);
  afterAll(async () => {
    await broker?.close();
  });

  it("I142 refuses an unbound token over gRPC, and accepts a bound one with its proof", async () => {
    const unbound = await broker.tokenFor("auth0|dpop-required-1");
    const err = asServiceError(
      await unary(broker.clients.secrets, "ListSecrets", {}, { callerKey, bearerToken: unbound }).catch(
        (e: unknown) => e,
      ),
    );
    expect(err.code).toBe(status.UNAUTHENTICATED);
    expect(err.details).toBe("this broker accepts only DPoP-bound access tokens (cnf.jkt)");
    const key = await createDpopKey();
    const bound = await broker.tokenFor("auth0|dpop-required-1", { cnf: { jkt: key.jkt } });
    const proof = await key.proof({ htu: `${ORIGIN}${LIST}`, accessToken: bound });
    const ok = await unary(
      broker.clients.secrets,
      "ListSecrets",
      {},
      { callerKey, bearerToken: bound, metadata: [["dpop", proof]] },
    );
    expect(ok.response.secrets).toEqual([]);
  });
});
