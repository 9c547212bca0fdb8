import { createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import {
  HEALTH_SERVICE_NAME,
  healthFileDescriptor,
} from "../../../../src/api/transport/health-descriptor.js";

describe("healthFileDescriptor", () => {
  it("is a valid descriptor of grpc.health.v1.Health with Check, Watch and List", () => {
    const registry = createFileRegistry(
      fromBinary(FileDescriptorProtoSchema, healthFileDescriptor()),
      () => undefined,
    );

    const service = registry.getService(HEALTH_SERVICE_NAME);

    expect(service?.methods.map((m) => [m.name, m.methodKind])).toEqual([
      ["Check", "unary"],
      ["Watch", "server_streaming"],
      ["List", "unary"],
    ]);
  });

  it("declares statuses as a real map, as strict clients require", () => {
    const registry = createFileRegistry(
      fromBinary(FileDescriptorProtoSchema, healthFileDescriptor()),
      () => undefined,
    );

    const field = registry.getMessage("grpc.health.v1.HealthListResponse")?.field.statuses;

    expect(field?.fieldKind).toBe("map");
  });
});
