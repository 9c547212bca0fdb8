import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createGrpcServer } from "../../../src/api/transport/grpc-server.js";
import { createLogger } from "../../../src/log/logger.js";
import { createFakeServices } from "./fake-services.js";

const BUF = fileURLToPath(new URL("../../../node_modules/.bin/buf", import.meta.url));
const run = promisify(execFile);

const server = createGrpcServer({
  services: createFakeServices().registrations,
  logger: createLogger({ level: "silent" }),
});
let baseUrl = "";

beforeAll(async () => {
  baseUrl = `http://127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
});

afterAll(async () => {
  await server.shutdown(1000);
});

/** Runs `buf curl` over plaintext gRPC; the schema comes only from server reflection. */
async function bufCurl(...args: string[]): Promise<string> {
  const { stdout } = await run(BUF, ["curl", "--protocol", "grpc", "--http2-prior-knowledge", ...args], {
    timeout: 20_000,
  });
  return stdout;
}

describe("server reflection", () => {
  it("lets buf curl list every service, health included, with no .proto at hand", async () => {
    const services = (await bufCurl("--list-services", baseUrl)).trim().split("\n");

    expect(services).toEqual(
      expect.arrayContaining([
        "keybroker.v1.SecretService",
        "keybroker.v1.ProxyService",
        "grpc.health.v1.Health",
      ]),
    );
  });

  it("lets buf curl list the methods of every service", async () => {
    const methods = await bufCurl("--list-methods", baseUrl);

    expect(methods).toContain("keybroker.v1.ProxyService/Call");
    expect(methods).toContain("keybroker.v1.ProxyService/CallStream");
  });

  it("gives buf curl enough schema to call ListSecrets from JSON, imports included", async () => {
    const output = await bufCurl(
      "--data",
      '{"provider": ""}',
      `${baseUrl}/keybroker.v1.SecretService/ListSecrets`,
    );

    const response = JSON.parse(output) as { secrets: Array<Record<string, unknown>> };
    expect(response.secrets[0]).toMatchObject({
      id: "sec_1",
      fieldNames: ["api_key", "api_secret"],
      // A google.protobuf.Timestamp, rendered from the imported timestamp.proto's descriptor.
      createdAt: "2023-11-14T22:13:20Z",
    });
  });

  it("describes grpc.health.v1 well enough for buf curl to call Check", async () => {
    const output = await bufCurl("--data", '{"service": ""}', `${baseUrl}/grpc.health.v1.Health/Check`);

    expect(JSON.parse(output)).toEqual({ status: "SERVING" });
  });
});
