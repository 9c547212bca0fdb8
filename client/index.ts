/**
 * `@keybroker/client`: the package's entry point. The client, its typed errors and the grpc-js
 * helpers it accepts; the generated message schemas are in `@keybroker/client/messages`.
 */
export * from "./keybroker-client.js";
