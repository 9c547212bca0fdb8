import { create, toBinary } from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
} from "@bufbuild/protobuf/wkt";

/** Fully-qualified name of the health service, as listed by reflection. */
export const HEALTH_SERVICE_NAME = "grpc.health.v1.Health";

/**
 * The FileDescriptorProto of grpc/health/v1/health.proto (the version grpc-health-check 2.x
 * serves: Check, Watch, List), written out for reflection. The descriptor grpc-health-check
 * exposes comes from protobufjs and names its map entry `Statuses` instead of
 * `StatusesEntry`, which strict clients (buf curl, grpcurl) reject, hiding the whole service.
 */
export function healthFileDescriptor(): Buffer {
  const optional = Label.OPTIONAL;
  const file = create(FileDescriptorProtoSchema, {
    name: "grpc/health/v1/health.proto",
    package: "grpc.health.v1",
    syntax: "proto3",
    messageType: [
      { name: "HealthListRequest" },
      {
        name: "HealthListResponse",
        field: [
          {
            name: "statuses",
            jsonName: "statuses",
            number: 1,
            label: Label.REPEATED,
            type: Type.MESSAGE,
            typeName: ".grpc.health.v1.HealthListResponse.StatusesEntry",
          },
        ],
        nestedType: [
          {
            name: "StatusesEntry",
            options: { mapEntry: true },
            field: [
              { name: "key", jsonName: "key", number: 1, label: optional, type: Type.STRING },
              {
                name: "value",
                jsonName: "value",
                number: 2,
                label: optional,
                type: Type.MESSAGE,
                typeName: ".grpc.health.v1.HealthCheckResponse",
              },
            ],
          },
        ],
      },
      {
        name: "HealthCheckRequest",
        field: [{ name: "service", jsonName: "service", number: 1, label: optional, type: Type.STRING }],
      },
      {
        name: "HealthCheckResponse",
        field: [
          {
            name: "status",
            jsonName: "status",
            number: 1,
            label: optional,
            type: Type.ENUM,
            typeName: ".grpc.health.v1.HealthCheckResponse.ServingStatus",
          },
        ],
        enumType: [
          {
            name: "ServingStatus",
            value: [
              { name: "UNKNOWN", number: 0 },
              { name: "SERVING", number: 1 },
              { name: "NOT_SERVING", number: 2 },
              { name: "SERVICE_UNKNOWN", number: 3 },
            ],
          },
        ],
      },
    ],
    service: [
      {
        name: "Health",
        method: [
          {
            name: "Check",
            inputType: ".grpc.health.v1.HealthCheckRequest",
            outputType: ".grpc.health.v1.HealthCheckResponse",
          },
          {
            name: "Watch",
            inputType: ".grpc.health.v1.HealthCheckRequest",
            outputType: ".grpc.health.v1.HealthCheckResponse",
            serverStreaming: true,
          },
          {
            name: "List",
            inputType: ".grpc.health.v1.HealthListRequest",
            outputType: ".grpc.health.v1.HealthListResponse",
          },
        ],
      },
    ],
  });
  const bytes = toBinary(FileDescriptorProtoSchema, file);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
