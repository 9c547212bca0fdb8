/**
 * grpc-js clients for tests, built the way the main app builds them: proto-loader over the
 * .proto files, not the protobuf-es code the server uses, so a test through these proves
 * wire compatibility rather than agreement of one library with itself.
 *
 * proto-loader options: `keepCase: false` gives camelCase fields (`secretId`), the same names
 * as protobuf-es, so one expected object serves every transport; `longs: String` as the main
 * app reads 64-bit fields; `defaults: true` fills unset scalars; `oneofs: true` adds the name
 * of the set oneof member (`part: "head"`). Bytes arrive as Buffer, Timestamps as
 * `{ seconds: string, nanos: number }`.
 */
import { fileURLToPath } from "node:url";
import {
  type CallOptions,
  type ChannelOptions,
  type Client,
  type ClientReadableStream,
  type ClientUnaryCall,
  credentials,
  type GrpcObject,
  loadPackageDefinition,
  Metadata,
  type ServiceClientConstructor,
  type ServiceError,
} from "@grpc/grpc-js";
import { loadSync, type Options } from "@grpc/proto-loader";

const PROTO_ROOT = fileURLToPath(new URL("../../proto", import.meta.url));
const PROTO_FILES = [
  "keybroker/v1/secrets.proto",
  "keybroker/v1/proxy.proto",
  "keybroker/v1/admin.proto",
  "keybroker/v1/sessions.proto",
  "keybroker/v1/pin.proto",
  "keybroker/v1/connections.proto",
];

export const PROTO_LOADER_OPTIONS: Options = {
  keepCase: false,
  longs: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_ROOT],
};

/** A decoded message as proto-loader gives it: plain object, camelCase fields. */
export type WireMessage = Record<string, unknown>;

/** Per-call options; credentials go in as metadata exactly as the main app sends them. */
export interface GrpcCallOptions {
  readonly callerKey?: string;
  readonly bearerToken?: string;
  /** Relative deadline. */
  readonly deadlineMs?: number;
  /** Extra raw metadata (e.g. a malformed `authorization`); values may repeat a key. */
  readonly metadata?: ReadonlyArray<readonly [string, string]>;
  /** Sees the server's initial metadata, also when the call then fails. */
  readonly onHeaders?: (headers: Metadata) => void;
}

/** Clients for both keybroker services on one channel each. */
export interface GrpcClients {
  readonly secrets: Client;
  readonly proxy: Client;
  readonly admin: Client;
  readonly sessions: Client;
  readonly pins: Client;
  readonly connections: Client;
  close(): void;
}

/** A successful unary call: the response and the server's initial metadata (headers). */
export interface UnaryResult {
  readonly response: WireMessage;
  readonly headers: Metadata;
}

/** A successful server-streaming call. */
export interface StreamResult {
  readonly messages: WireMessage[];
  readonly headers: Metadata;
}

let loaded: GrpcObject | undefined;

/** The keybroker.v1 package as grpc-js sees it (loaded once per test file). */
export function loadKeybrokerPackage(): GrpcObject {
  loaded ??= loadPackageDefinition(loadSync(PROTO_FILES, PROTO_LOADER_OPTIONS));
  return loaded;
}

/**
 * Plaintext clients for `address` ("127.0.0.1:PORT"); close() them in afterAll. AdminService has
 * its own listener (L6): its client dials `adminAddress`, by default `address` too.
 */
export function createGrpcClients(
  address: string,
  adminAddress = address,
  channelOptions: ChannelOptions = {},
): GrpcClients {
  const v1 = (loadKeybrokerPackage().keybroker as GrpcObject).v1 as GrpcObject;
  const SecretsClient = v1.SecretService as ServiceClientConstructor;
  const ProxyClient = v1.ProxyService as ServiceClientConstructor;
  const insecure = credentials.createInsecure();
  // Clients with equal options share one channel (connection); a test wanting several passes distinct options.
  const secrets = new SecretsClient(address, insecure, channelOptions);
  const proxy = new ProxyClient(address, insecure, channelOptions);
  const admin = new (v1.AdminService as ServiceClientConstructor)(adminAddress, insecure, channelOptions);
  const sessions = new (v1.SessionService as ServiceClientConstructor)(address, insecure, channelOptions);
  const pins = new (v1.PinService as ServiceClientConstructor)(address, insecure, channelOptions);
  const connections = new (v1.ConnectionService as ServiceClientConstructor)(
    address,
    insecure,
    channelOptions,
  );
  return {
    secrets,
    proxy,
    admin,
    sessions,
    pins,
    connections,
    close() {
      secrets.close();
      proxy.close();
      admin.close();
      sessions.close();
      pins.close();
      connections.close();
    },
  };
}

/** Builds the metadata the main app would send. */
export function callMetadata(options: GrpcCallOptions = {}): Metadata {
  const metadata = new Metadata();
  if (options.callerKey !== undefined) {
    metadata.set("x-keybroker-key", options.callerKey);
  }
  if (options.bearerToken !== undefined) {
    metadata.set("authorization", `Bearer ${options.bearerToken}`);
  }
  for (const [key, value] of options.metadata ?? []) {
    metadata.add(key, value);
  }
  return metadata;
}

type UnaryMethod = (
  request: WireMessage,
  metadata: Metadata,
  options: CallOptions,
  callback: (err: ServiceError | null, response?: WireMessage) => void,
) => ClientUnaryCall;

type StreamMethod = (
  request: WireMessage,
  metadata: Metadata,
  options: CallOptions,
) => ClientReadableStream<WireMessage>;

/** Calls a unary method by name (`"ListSecrets"` or `"listSecrets"`); rejects with the ServiceError. */
export function unary(
  client: Client,
  method: string,
  request: WireMessage,
  options: GrpcCallOptions = {},
): Promise<UnaryResult> {
  const fn = methodOf<UnaryMethod>(client, method);
  return new Promise((resolve, reject) => {
    let headers = new Metadata();
    const call = fn.call(client, request, callMetadata(options), callOptions(options), (err, response) => {
      if (err) {
        reject(err);
      } else {
        resolve({ response: response ?? {}, headers });
      }
    });
    call.on("metadata", (received: Metadata) => {
      headers = received;
      options.onHeaders?.(received);
    });
  });
}

/**
 * Calls a server-streaming method and collects every message; rejects with the ServiceError.
 * `onMessage` sees each message as it arrives, including those before a failure.
 */
export function serverStream(
  client: Client,
  method: string,
  request: WireMessage,
  options: GrpcCallOptions = {},
  onMessage?: (message: WireMessage) => void,
): Promise<StreamResult> {
  const fn = methodOf<StreamMethod>(client, method);
  return new Promise((resolve, reject) => {
    const messages: WireMessage[] = [];
    let headers = new Metadata();
    const call = fn.call(client, request, callMetadata(options), callOptions(options));
    call.on("metadata", (received: Metadata) => {
      headers = received;
      options.onHeaders?.(received);
    });
    call.on("data", (message: WireMessage) => {
      messages.push(message);
      onMessage?.(message);
    });
    call.on("error", reject);
    call.on("end", () => resolve({ messages, headers }));
  });
}

/** Narrows an unknown rejection to a grpc-js ServiceError, failing the test otherwise. */
export function asServiceError(err: unknown): ServiceError {
  if (err instanceof Error && typeof (err as Partial<ServiceError>).code === "number") {
    return err as ServiceError;
  }
  throw new Error(`expected a gRPC ServiceError, got ${String(err)}`);
}

function callOptions(options: GrpcCallOptions): CallOptions {
  return options.deadlineMs === undefined ? {} : { deadline: Date.now() + options.deadlineMs };
}

function methodOf<T>(client: Client, method: string): T {
  const fn = (client as unknown as Record<string, unknown>)[method];
  if (typeof fn !== "function") {
    throw new Error(`client has no method ${method}`);
  }
  return fn as T;
}
