import {
  type BinaryReadOptions,
  create,
  type DescMessage,
  type DescService,
  fromBinary,
  type Message,
  type MessageInitShape,
  toBinary,
} from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { BrokerError } from "../../errors.js";

/**
 * What the server's deserializer yields: the decoded message, or the BrokerError to answer
 * with. grpc-js turns a throwing deserializer into INTERNAL, but undecodable bytes are the
 * caller's fault, so the failure is returned as a value and the call answers INVALID_ARGUMENT.
 */
export type DecodedRequest = Message | BrokerError;

/** A grpc-js method whose responses the caller encodes before writing (see `encodeResponse`). */
export type GrpcServerMethod = MethodDefinition<DecodedRequest, Buffer>;

// Unknown fields are dropped rather than kept on the message: nothing downstream needs them,
// and they must not ride along if a handler ever echoes part of a request.
const READ_OPTIONS: Partial<BinaryReadOptions> = { readUnknownFields: false };

/**
 * A grpc-js ServiceDefinition for a protobuf-es service, for serving only. Paths follow the
 * gRPC convention (`/keybroker.v1.SecretService/PutSecret`), so any gRPC client can call it.
 * Responses are encoded by the caller with `encodeResponse` and passed through here, so an
 * encoding failure surfaces in our code as INTERNAL "internal error" instead of grpc-js
 * sending the encoder's message to the client.
 */
export function createGrpcServiceDefinition(service: DescService): ServiceDefinition {
  const definition: Record<string, GrpcServerMethod> = {};
  for (const method of service.methods) {
    const schema = method.input;
    definition[method.name] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      originalName: method.localName,
      requestDeserialize: (bytes: Buffer) => decodeRequest(schema, bytes),
      requestSerialize: (value: DecodedRequest) => encodeRequest(schema, value),
      responseSerialize: passThrough,
      responseDeserialize: passThrough,
    };
  }
  return definition;
}

/** Decodes request bytes, returning (not throwing) INVALID_ARGUMENT on garbage. */
export function decodeRequest(schema: DescMessage, bytes: Uint8Array): DecodedRequest {
  try {
    return fromBinary(schema, bytes, READ_OPTIONS);
  } catch (cause) {
    return new BrokerError("invalid_argument", "malformed request message", { cause });
  }
}

/** Encodes a handler's response for the wire; throws if the handler returned an invalid value. */
export function encodeResponse(schema: DescMessage, init: MessageInitShape<DescMessage>): Buffer {
  const bytes = toBinary(schema, create(schema, init));
  // A view, not a copy: grpc-js needs Buffer methods on what the serializer returns.
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function encodeRequest(schema: DescMessage, value: DecodedRequest): Buffer {
  if (value instanceof BrokerError) {
    throw value;
  }
  const bytes = toBinary(schema, value);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function passThrough(bytes: Buffer): Buffer {
  return bytes;
}
