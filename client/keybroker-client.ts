/**
 * The main app's client for Keybroker over gRPC (`@grpc/grpc-js`), typed from the proto: the
 * paths, request and response types all come from the protobuf-es code in src/gen, so a
 * proto change shows up here as a type error, not as a silent wire mismatch.
 *
 * The caller key is this app's own credential and is held for the client's lifetime; the
 * user's access token is passed per call and never stored, so one client serves every user.
 */
import {
  create,
  type DescMessage,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type CallOptions,
  type ChannelCredentials,
  Client,
  credentials as channelCredentials,
  Metadata,
} from "@grpc/grpc-js";
import { refusalFromStatusDetails, retryDelayFromStatusDetails } from "../src/api/error-info.js";
import {
  AUTHORIZATION_HEADER,
  CALLER_KEY_HEADER,
  DPOP_HEADER,
  REQUEST_ID_HEADER,
  STATUS_DETAILS_HEADER,
} from "../src/api/wire-headers.js";
import {
  type CallRequestSchema,
  type CallResponse,
  type CallStreamResponse,
  ProxyService,
} from "../src/gen/keybroker/v1/proxy_pb.js";
import {
  type PutSecretRequestSchema,
  type SecretMetadata,
  SecretService,
} from "../src/gen/keybroker/v1/secrets_pb.js";
import {
  CancelledError,
  type FailedStatus,
  InternalError,
  InvalidArgumentError,
  KeybrokerError,
  keybrokerErrorOf,
  UnauthenticatedError,
} from "./errors.js";

export type { CallResponse, ResponseHead } from "../src/gen/keybroker/v1/proxy_pb.js";
export * from "./errors.js";

export interface KeybrokerClientOptions {
  /** "host:port" of the broker's gRPC listener, e.g. "127.0.0.1:50051". */
  readonly address: string;
  /** This app's broker-issued caller key (sent as `x-keybroker-key`). */
  readonly callerKey: string;
  /** Default: plaintext for a loopback or unix-socket address, TLS with the system roots otherwise. */
  readonly credentials?: ChannelCredentials;
  /** Deadline for a call without its own `deadlineMs`; default 10 s. */
  readonly defaultDeadlineMs?: number;
}

/** Per-call options. */
export interface KeybrokerCallOptions {
  /** Relative deadline in ms; for `callStream` it bounds the whole stream, not each chunk. */
  readonly deadlineMs?: number;
  /** Aborting cancels the call (the broker stops the upstream request) with a CancelledError. */
  readonly signal?: AbortSignal;
  /**
   * A DPoP proof (RFC 9449) for this one call, when the user's token is DPoP-bound: minted by the
   * holder of the bound key (ideally the user's browser) for `htu` = the broker's DPoP origin +
   * "/keybroker.v1.<Service>/<Method>", `htm` "POST", `ath` of this token. Sent as `dpop`; a proof
   * is good for one call only.
   */
  readonly dpopProof?: string;
}

/** The init fields of a generated message, without protobuf-es's own `$typeName`. */
type FieldsOf<S extends DescMessage> = Omit<Exclude<MessageInitShape<S>, MessageShape<S>>, "$typeName">;
type WithRequired<T, K extends keyof T> = Omit<T, K> & Required<Pick<T, K>>;

/** `PutSecretRequest`: leave out `secretId` to create a secret, set it to add a version. */
export type PutSecretInput = WithRequired<
  FieldsOf<typeof PutSecretRequestSchema>,
  "provider" | "label" | "fields"
>;

/** `CallRequest` (also used for `callStream`): query and headers as `{ name, value }` lists. */
export type ProxyCallInput = WithRequired<FieldsOf<typeof CallRequestSchema>, "secretId" | "method" | "path">;

type TimestampField = "createdAt" | "updatedAt" | "lastUsedAt";

/**
 * `SecretMetadata` with its timestamps as Dates: protobuf-es Timestamps hold `bigint` seconds,
 * which JSON.stringify refuses, and every app would otherwise convert them itself.
 */
export type SecretInfo = Omit<SecretMetadata, "$typeName" | "$unknown" | TimestampField> & {
  readonly [K in TimestampField]: Date | undefined;
};

/** One message of a streamed call: the response head first, then body chunks. */
export type CallStreamPart = Exclude<CallStreamResponse["part"], { case: undefined }>;

export interface KeybrokerClient {
  /** Stores a credential for the token's user (scope secrets:write); returns its metadata. */
  putSecret(userToken: string, input: PutSecretInput, opts?: KeybrokerCallOptions): Promise<SecretInfo>;
  /** The user's secrets, metadata only (scope secrets:read). */
  listSecrets(
    userToken: string,
    filter?: { readonly provider?: string },
    opts?: KeybrokerCallOptions,
  ): Promise<SecretInfo[]>;
  /** Deletes one of the user's secrets with all its versions (scope secrets:write). */
  deleteSecret(userToken: string, secretId: string, opts?: KeybrokerCallOptions): Promise<void>;
  /** A provider call made by the broker with the stored credential; the body is buffered. */
  call(userToken: string, input: ProxyCallInput, opts?: KeybrokerCallOptions): Promise<CallResponse>;
  /** The same call with the response streamed; breaking out of the loop cancels it. */
  callStream(
    userToken: string,
    input: ProxyCallInput,
    opts?: KeybrokerCallOptions,
  ): AsyncGenerator<CallStreamPart, void, undefined>;
  /** Closes the channel; calls in flight fail with UNAVAILABLE or CANCELLED. */
  close(): void;
}

const DEFAULT_DEADLINE_MS = 10_000;
// What grpc-js accepts in a text metadata value. Checked here because grpc-js's own error for
// an illegal value quotes the value, and that value is a token or a key.
const METADATA_VALUE = /^[ -~]+$/;

export function createKeybrokerClient(options: KeybrokerClientOptions): KeybrokerClient {
  // Local, not a property: logging or inspecting the client object cannot print the key.
  const callerKey = options.callerKey;
  if (!METADATA_VALUE.test(callerKey)) {
    throw new TypeError("callerKey must be a non-empty string of printable ASCII characters");
  }
  const defaultDeadlineMs = options.defaultDeadlineMs ?? DEFAULT_DEADLINE_MS;
  const grpc = new Client(options.address, options.credentials ?? defaultCredentials(options.address));

  /** Metadata and call options for one call; throws the typed error instead of sending junk. */
  function prepare(
    userToken: string,
    opts: KeybrokerCallOptions,
  ): { metadata: Metadata; callOptions: CallOptions } {
    if (opts.signal?.aborted) {
      throw new CancelledError("CANCELLED", "call cancelled before it started", undefined);
    }
    const metadata = new Metadata();
    metadata.set(CALLER_KEY_HEADER, callerKey);
    // An empty token is sent as no token: the broker, not the client, decides what is refused.
    if (userToken !== "") {
      if (!METADATA_VALUE.test(userToken)) {
        throw new UnauthenticatedError("user access token is not a valid header value", undefined, {
          reason: "token_malformed",
          credential: "access_token",
        });
      }
      metadata.set(AUTHORIZATION_HEADER, `Bearer ${userToken}`);
    }
    if (opts.dpopProof !== undefined) {
      if (!METADATA_VALUE.test(opts.dpopProof)) {
        throw new UnauthenticatedError("DPoP proof is not a valid header value", undefined, {
          reason: "dpop_proof_invalid",
          credential: "access_token",
        });
      }
      metadata.set(DPOP_HEADER, opts.dpopProof);
    }
    return { metadata, callOptions: { deadline: Date.now() + (opts.deadlineMs ?? defaultDeadlineMs) } };
  }

  function unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    init: MessageInitShape<I>,
    userToken: string,
    opts: KeybrokerCallOptions,
  ): Promise<MessageShape<O>> {
    return new Promise((resolve, reject) => {
      const secrets = [callerKey, userToken];
      let headerRequestId: string | undefined;
      let detach = noop;
      try {
        const { metadata, callOptions } = prepare(userToken, opts);
        const call = grpc.makeUnaryRequest(
          pathOf(method),
          passThrough,
          decoderOf(method.output),
          encode(method.input, init),
          metadata,
          callOptions,
          (err, response) => {
            detach();
            if (err) {
              const requestId = requestIdOf(err.metadata) ?? headerRequestId;
              reject(keybrokerErrorOf(failedStatusOf(err, err.metadata), requestId, secrets));
            } else if (response === undefined) {
              reject(new InternalError("INTERNAL", "empty response", headerRequestId));
            } else {
              resolve(response);
            }
          },
        );
        call.on("metadata", (headers: Metadata) => {
          headerRequestId = requestIdOf(headers);
        });
        detach = onAbort(opts.signal, () => call.cancel());
      } catch (err) {
        reject(asKeybrokerError(err));
      }
    });
  }

  async function* serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    init: MessageInitShape<I>,
    userToken: string,
    opts: KeybrokerCallOptions,
  ): AsyncGenerator<MessageShape<O>, void, undefined> {
    const secrets = [callerKey, userToken];
    const { metadata, callOptions } = prepare(userToken, opts);
    const stream = grpc.makeServerStreamRequest(
      pathOf(method),
      passThrough,
      decoderOf(method.output),
      encode(method.input, init),
      metadata,
      callOptions,
    );
    let requestId: string | undefined;
    stream.on("metadata", (headers: Metadata) => {
      requestId = requestIdOf(headers);
    });
    // grpc-js emits 'error' itself, also after we stopped reading (CANCELLED once we cancel):
    // without a listener for the stream's whole life that would be an uncaught exception.
    stream.on("error", noop);
    const detach = onAbort(opts.signal, () => stream.cancel());
    let settled = false;
    try {
      for await (const message of stream as AsyncIterable<MessageShape<O>>) {
        yield message;
      }
      settled = true;
    } catch (err) {
      settled = true;
      throw asKeybrokerError(err, requestId, secrets);
    } finally {
      detach();
      // The consumer stopped early: cancel, so the broker stops reading the upstream too.
      if (!settled) stream.cancel();
    }
  }

  return {
    async putSecret(userToken, input, opts = {}) {
      const response = await unary(SecretService.method.putSecret, input, userToken, opts);
      if (response.secret === undefined) {
        throw new InternalError("INTERNAL", "response carried no secret metadata", undefined);
      }
      return secretInfoOf(response.secret);
    },
    async listSecrets(userToken, filter = {}, opts = {}) {
      const response = await unary(SecretService.method.listSecrets, filter, userToken, opts);
      return response.secrets.map(secretInfoOf);
    },
    async deleteSecret(userToken, secretId, opts = {}) {
      await unary(SecretService.method.deleteSecret, { secretId }, userToken, opts);
    },
    call(userToken, input, opts = {}) {
      return unary(ProxyService.method.call, input, userToken, opts);
    },
    async *callStream(userToken, input, opts = {}) {
      for await (const message of serverStream(ProxyService.method.callStream, input, userToken, opts)) {
        // An empty oneof carries nothing; a newer broker may also send parts we do not know yet.
        if (message.part.case !== undefined) yield message.part;
      }
    },
    close() {
      grpc.close();
    },
  };
}

/** gRPC's path for a method: "/keybroker.v1.SecretService/PutSecret". */
function pathOf(method: { readonly parent: { readonly typeName: string }; readonly name: string }): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/**
 * Encodes before grpc-js sees the request. grpc-js would report a failing serializer with the
 * encoder's message, which can quote a field value — here a secret — so the error carries none.
 */
function encode<I extends DescMessage>(schema: I, init: MessageInitShape<I>): Buffer {
  let bytes: Uint8Array;
  try {
    bytes = toBinary(schema, create(schema, init));
  } catch {
    throw new InvalidArgumentError("INVALID_ARGUMENT", `could not encode ${schema.typeName}`, undefined);
  }
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function decoderOf<O extends DescMessage>(schema: O): (bytes: Buffer) => MessageShape<O> {
  return (bytes) => fromBinary(schema, bytes);
}

function passThrough(bytes: Buffer): Buffer {
  return bytes;
}

function noop(): void {}

function requestIdOf(metadata: Metadata | undefined): string | undefined {
  const value = metadata?.get(REQUEST_ID_HEADER)[0];
  return typeof value === "string" ? value : undefined;
}

/** Cancels on abort; returns the function that stops listening. */
function onAbort(signal: AbortSignal | undefined, cancel: () => void): () => void {
  if (signal === undefined) return noop;
  signal.addEventListener("abort", cancel, { once: true });
  return () => signal.removeEventListener("abort", cancel);
}

/** The status a failed call ended with, and the refusal and retry delay its `grpc-status-details-bin` carries. */
function failedStatusOf(err: { code: number; details: unknown }, trailers: unknown): FailedStatus {
  const details = typeof err.details === "string" ? err.details : "";
  const bin = trailers instanceof Metadata ? trailers.get(STATUS_DETAILS_HEADER)[0] : undefined;
  if (!(bin instanceof Buffer)) return { code: err.code, details };
  return {
    code: err.code,
    details,
    refusal: refusalFromStatusDetails(bin),
    retryAfterMs: retryDelayFromStatusDetails(bin),
  };
}

/** Our typed errors pass through; a gRPC status is mapped; anything else is INTERNAL with a fixed text. */
function asKeybrokerError(err: unknown, requestId?: string, secrets: readonly string[] = []): KeybrokerError {
  if (err instanceof KeybrokerError) return err;
  if (err instanceof Error && "code" in err && typeof err.code === "number" && "details" in err) {
    const trailers = "metadata" in err ? err.metadata : undefined;
    return keybrokerErrorOf(
      failedStatusOf({ code: err.code, details: err.details }, trailers),
      requestId,
      secrets,
    );
  }
  // Its message may come from anywhere; a fixed text is the only one known to be safe.
  return new InternalError("INTERNAL", "unexpected client failure", requestId);
}

function secretInfoOf(metadata: SecretMetadata): SecretInfo {
  const { $typeName, $unknown, createdAt, updatedAt, lastUsedAt, ...fields } = metadata;
  return {
    ...fields,
    createdAt: dateOf(createdAt),
    updatedAt: dateOf(updatedAt),
    lastUsedAt: dateOf(lastUsedAt),
  };
}

function dateOf(timestamp: Timestamp | undefined): Date | undefined {
  return timestamp === undefined ? undefined : timestampDate(timestamp);
}

/** Plaintext only where nothing crosses a network: loopback hosts and unix sockets. */
function defaultCredentials(address: string): ChannelCredentials {
  return isLocalAddress(address) ? channelCredentials.createInsecure() : channelCredentials.createSsl();
}

function isLocalAddress(address: string): boolean {
  if (address.startsWith("unix:")) return true;
  const target = address.replace(/^(dns|ipv4|ipv6):(\/\/[^/]*\/)?/, "");
  const host = target.startsWith("[") ? target.slice(1, target.indexOf("]")) : target.split(":")[0];
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host ?? "");
}
