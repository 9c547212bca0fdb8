import { describe, expect, it } from "vitest";
import type { CallContext } from "../../../../src/api/transport/call-context.js";
import {
  registerService,
  type ServiceHandlers,
  streamingHandlerOf,
  unaryHandlerOf,
} from "../../../../src/api/transport/handlers.js";
import { ProxyService } from "../../../../src/gen/keybroker/v1/proxy_pb.js";
import { SecretService } from "../../../../src/gen/keybroker/v1/secrets_pb.js";

const secretHandlers: ServiceHandlers<typeof SecretService> = {
  putSecret: async (request) => ({ secret: { id: request.secretId } }),
  listSecrets: async () => ({ secrets: [] }),
  deleteSecret: async () => ({}),
  listSecretUses: async () => ({ uses: [], nextPageToken: "" }),
  inspectSecret: async (request) => ({ secret: { id: request.secretId } }),
};

describe("registerService", () => {
  it("keeps one handler per RPC, found by its method descriptor", async () => {
    const registration = registerService(SecretService, secretHandlers);
    const put = SecretService.method.putSecret;

    const handler = unaryHandlerOf(registration, put);
    const response = await handler(
      { $typeName: "keybroker.v1.PutSecretRequest", secretId: "s1" } as never,
      {} as CallContext,
    );

    expect(Object.keys(registration.handlers).sort()).toEqual([
      "deleteSecret",
      "inspectSecret",
      "listSecretUses",
      "listSecrets",
      "putSecret",
    ]);
    expect(response).toEqual({ secret: { id: "s1" } });
  });

  it("serves server-streaming RPCs", () => {
    const registration = registerService(ProxyService, {
      call: async () => ({ status: 200 }),
      async *callStream() {
        yield { part: { case: "chunk", value: new Uint8Array([1]) } };
      },
    });

    expect(typeof streamingHandlerOf(registration, ProxyService.method.callStream)).toBe("function");
  });

  it("refuses to start when an RPC has no handler", () => {
    const incomplete = { putSecret: secretHandlers.putSecret, listSecrets: secretHandlers.listSecrets };

    expect(() => registerService(SecretService, incomplete as unknown as typeof secretHandlers)).toThrow(
      "keybroker.v1.SecretService/DeleteSecret: no handler registered",
    );
  });

  it("does not let a registration be changed after the fact", () => {
    const registration = registerService(SecretService, secretHandlers);

    expect(Object.isFrozen(registration.handlers)).toBe(true);
  });
});
