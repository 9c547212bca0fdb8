import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, expect, it } from "vitest";
import { createKeybrokerClient, type KeybrokerClient } from "../../client/keybroker-client.js";
import { createExampleApp, DPOP_FORWARD_HEADER } from "../../examples/express-app/app.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { createDpopKey, type DpopKey } from "../support/dpop-keys.js";
import { describeOnEachDatabase } from "../support/test-database.js";

// The browser's side is played by a non-extractable ES256 key minting one proof per action, as
// the snippet in examples/express-app/README.md does with WebCrypto; the app only forwards it.
const ORIGIN = "https://keybroker.test";
const LIST_RPC = `${ORIGIN}/keybroker.v1.SecretService/ListSecrets`;

describeOnEachDatabase("example app forwards the browser's DPoP proof (issue 14, %s)", (kind) => {
  let broker: BrokerHarness;
  let client: KeybrokerClient;
  let server: Server;
  let baseUrl: string;
  let browserKey: DpopKey;

  beforeAll(async () => {
    broker = await startBroker(kind, { KEYBROKER_DPOP_HTU_ORIGIN: ORIGIN, KEYBROKER_DPOP_REQUIRED: "1" });
    const appKey = (await broker.callerKey(["secrets:read", "secrets:write"])).key;
    client = createKeybrokerClient({ address: broker.grpcAddress, callerKey: appKey });
    server = createExampleApp({ broker: client, logError: () => undefined }).listen(0, "127.0.0.1");
    await once(server, "listening");
    baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    browserKey = await createDpopKey();
  }, 60_000);
  afterAll(async () => {
    await new Promise<void>((resolve) => server?.close(() => resolve()));
    client?.close();
    await broker?.close();
  });

  const listConnections = (token: string, proof?: string) =>
    fetch(`${baseUrl}/connections`, {
      headers: {
        authorization: `Bearer ${token}`,
        ...(proof === undefined ? {} : { [DPOP_FORWARD_HEADER]: proof }),
      },
    });

  it("I143 a compromised app host holding the bound token cannot act without a fresh proof from the user's browser", async () => {
    const token = await broker.tokenFor("auth0|example-dpop-1", { cnf: { jkt: browserKey.jkt } });
    const proof = await browserKey.proof({ htu: LIST_RPC, accessToken: token });

    const ok = await listConnections(token, proof);
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ connections: [] });

    // The host kept the token and the used proof, but has no key: neither works again.
    for (const attempt of [listConnections(token), listConnections(token, proof)]) {
      const answer = await attempt;
      expect(answer.status).toBe(401);
      expect(await answer.json()).toMatchObject({
        error: "DPoP proof refused: mint a new one for this action",
      });
    }
  });
});
