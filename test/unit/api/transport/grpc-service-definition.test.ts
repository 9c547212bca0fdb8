import { create, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import {
  createGrpcServiceDefinition,
  decodeRequest,
  encodeResponse,
} from "../../../../src/api/transport/grpc-service-definition.js";
import { isBrokerError } from "../../../../src/errors.js";
import { ProxyService } from "../../../../src/gen/keybroker/v1/proxy_pb.js";
import {
  ListSecretsResponseSchema,
  PutSecretRequestSchema,
  SecretService,
} from "../../../../src/gen/keybroker/v1/secrets_pb.js";

describe("createGrpcServiceDefinition", () => {
  it("uses the standard gRPC path and streaming flags of each method", () => {
    const definition = createGrpcServiceDefinition(ProxyService);

    expect(definition.Call).toMatchObject({
      path: "/keybroker.v1.ProxyService/Call",
      requestStream: false,
      responseStream: false,
      originalName: "call",
    });
    expect(definition.CallStream).toMatchObject({
      path: "/keybroker.v1.ProxyService/CallStream",
      requestStream: false,
      responseStream: true,
    });
  });

  it("decodes request bytes into the method's input message", () => {
    const definition = createGrpcServiceDefinition(SecretService);
    const bytes = toBinary(PutSecretRequestSchema, create(PutSecretRequestSchema, { provider: "binance" }));

    const decoded = definition.PutSecret?.requestDeserialize(Buffer.from(bytes));

    expect(decoded).toMatchObject({ $typeName: "keybroker.v1.PutSecretRequest", provider: "binance" });
  });
});

describe("decodeRequest", () => {
  it.each([
    ["a truncated length", [0x0a, 0xff, 0xff]],
    ["an invalid wire type", [0x0f]],
    ["a truncated varint", [0x08, 0xff]],
  ])("returns an INVALID_ARGUMENT BrokerError for %s instead of throwing", (_case, bytes) => {
    const result = decodeRequest(PutSecretRequestSchema, new Uint8Array(bytes));

    expect(isBrokerError(result) && result.code).toBe("invalid_argument");
    expect(isBrokerError(result) && result.message).toBe("malformed request message");
  });

  it("drops unknown fields rather than keeping them on the message", () => {
    // field 99, varint 1: not in PutSecretRequest
    const decoded = decodeRequest(PutSecretRequestSchema, new Uint8Array([0x98, 0x06, 0x01]));

    expect(isBrokerError(decoded)).toBe(false);
    expect((decoded as { $unknown?: unknown }).$unknown).toBeUndefined();
  });
});

describe("encodeResponse", () => {
  it("encodes a handler's plain object as the output message, as a Buffer", () => {
    const bytes = encodeResponse(ListSecretsResponseSchema, { secrets: [{ id: "s1", version: 3 }] });

    expect(Buffer.isBuffer(bytes)).toBe(true);
    expect(bytes.toString("hex")).toBe(
      toBinary(
        ListSecretsResponseSchema,
        create(ListSecretsResponseSchema, { secrets: [{ id: "s1", version: 3 }] }),
      ).reduce((hex, b) => hex + b.toString(16).padStart(2, "0"), ""),
    );
  });

  it("throws for a value the schema cannot hold", () => {
    expect(() => encodeResponse(ListSecretsResponseSchema, { secrets: [{ version: -1 }] })).toThrow();
  });
});
