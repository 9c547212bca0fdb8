/**
 * A real grpc-js server that answers the broker's method paths with scripted replies, for the
 * client's transport tests (retries, load balancing, credentials, interceptors): they need a
 * broker that is UNAVAILABLE on the first attempt, or one of two replicas, which the real broker
 * cannot be made to be on cue. Everything it answers is encoded with the generated schemas.
 */
import {
  type handleServerStreamingCall,
  type handleUnaryCall,
  Metadata,
  type MethodDefinition,
  Server,
  ServerCredentials,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";

/** One scripted reply: encoded messages (a stream may send several), then OK or an error. */
export interface StubReply {
  readonly messages?: readonly Uint8Array[];
  readonly error?: { readonly code: number; readonly details: string };
}

/** Decides the reply to the `attempt`-th call (from 1) of one path; sees the call's metadata. */
export type StubHandler = (attempt: number, metadata: Metadata) => StubReply;

export interface StubServer {
  readonly port: number;
  /** Calls received per method path. */
  readonly calls: Map<string, number>;
  close(): Promise<void>;
}

/** `methods` maps a path ("/keybroker.v1.SecretService/ListSecrets") to its handler and kind. */
export async function startStubServer(
  methods: Readonly<Record<string, { readonly streaming?: boolean; readonly handler: StubHandler }>>,
  credentials: ServerCredentials = ServerCredentials.createInsecure(),
): Promise<StubServer> {
  const calls = new Map<string, number>();
  const definition: Record<string, MethodDefinition<Buffer, Buffer>> = {};
  const implementation: UntypedServiceImplementation = {};
  const identity = (bytes: Buffer) => bytes;
  for (const [path, { streaming = false, handler }] of Object.entries(methods)) {
    definition[path] = {
      path,
      requestStream: false,
      responseStream: streaming,
      requestSerialize: identity,
      requestDeserialize: identity,
      responseSerialize: identity,
      responseDeserialize: identity,
    };
    const replyTo = (metadata: Metadata): StubReply => {
      const attempt = (calls.get(path) ?? 0) + 1;
      calls.set(path, attempt);
      return handler(attempt, metadata);
    };
    const unary: handleUnaryCall<Buffer, Buffer> = (call, callback) => {
      const reply = replyTo(call.metadata);
      if (reply.error !== undefined) callback({ ...reply.error, metadata: new Metadata() });
      else callback(null, Buffer.from(reply.messages?.[0] ?? new Uint8Array()));
    };
    const stream: handleServerStreamingCall<Buffer, Buffer> = (call) => {
      const reply = replyTo(call.metadata);
      for (const message of reply.messages ?? []) call.write(Buffer.from(message));
      if (reply.error === undefined) call.end();
      else call.emit("error", { ...reply.error, metadata: new Metadata() });
    };
    implementation[path] = streaming ? stream : unary;
  }
  const server = new Server();
  server.addService(definition, implementation);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", credentials, (err, bound) => (err ? reject(err) : resolve(bound)));
  });
  return {
    port,
    calls,
    close: () =>
      new Promise<void>((resolve) => {
        server.forceShutdown();
        resolve();
      }),
  };
}
