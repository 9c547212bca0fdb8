import { create, createFileRegistry, type DescService } from "@bufbuild/protobuf";
import {
  FileDescriptorProtoSchema,
  FieldDescriptorProto_Label as Label,
  FieldDescriptorProto_Type as Type,
} from "@bufbuild/protobuf/wkt";

/**
 * `bench.v1.EchoService/Echo(EchoMessage) returns (EchoMessage)`, one bytes field: the transport
 * floor. Built from a descriptor at run time so the broker's proto/ and buf lint stay untouched.
 */
export const ECHO_METHOD_PATH = "/bench.v1.EchoService/Echo";

export function echoServiceDesc(): DescService {
  const file = create(FileDescriptorProtoSchema, {
    name: "bench/v1/echo.proto",
    package: "bench.v1",
    syntax: "proto3",
    messageType: [
      {
        name: "EchoMessage",
        field: [{ name: "payload", jsonName: "payload", number: 1, label: Label.OPTIONAL, type: Type.BYTES }],
      },
    ],
    service: [
      {
        name: "EchoService",
        method: [{ name: "Echo", inputType: ".bench.v1.EchoMessage", outputType: ".bench.v1.EchoMessage" }],
      },
    ],
  });
  const service = createFileRegistry(file, () => undefined).getService("bench.v1.EchoService");
  if (service === undefined) throw new Error("echo descriptor has no EchoService");
  return service;
}

/** An EchoMessage on the wire: field 1, length-delimited (grpc-js clients send raw bytes). */
export function encodeEchoMessage(payload: Uint8Array): Buffer {
  if (payload.length > 127) throw new RangeError("echo payloads stay under 128 bytes (one-byte length)");
  return Buffer.concat([Buffer.from([0x0a, payload.length]), payload]);
}
