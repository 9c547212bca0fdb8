/**
 * `@keybroker/client/messages`: the protobuf-es schemas and types generated from `proto/` for the
 * services this client calls, for apps that encode, decode or build messages themselves
 * (`create(CallRequestSchema, ...)` from `@bufbuild/protobuf`).
 */
export * from "../src/gen/keybroker/v1/proxy_pb.js";
export * from "../src/gen/keybroker/v1/secrets_pb.js";
