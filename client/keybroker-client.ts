/**
 * The main app's client for Keybroker over gRPC (`@grpc/grpc-js`), typed from the proto: the
 * paths, request and response types all come from the protobuf-es code in src/gen, so a
 * proto change shows up here as a type error, not as a silent wire mismatch.
 *
 * The caller key is this app's own credential and is held for the client's lifetime; the
 * user's access token is passed per call and never stored, so one client serves every user.
 * Apps outside this repo install it as `@keybroker/client` (client/package.json, client/build.ts).
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
  type ChannelOptions,
  Client,
  type Interceptor,
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
import { channelOptionsOf, credentialsOf, type KeybrokerTlsOptions } from "./channel.js";
import {
  CancelledError,
  type FailedStatus,
  InternalError,
  InvalidArgumentError,
  KeybrokerError,
  keybrokerErrorOf,
  UnauthenticatedError,
} from "./errors.js";
import {
  backoffMs,
  isRetryableFailure,
  isSafeHttpMethod,
  type KeybrokerRetryOptions,
  NO_RETRIES,
  type RetryPolicy,
  retryPolicyOf,
  waitBeforeRetry,
} from "./retry.js";

// The grpc-js this client runs on: credentials and interceptors must come from the same copy.
export {
  type ChannelCredentials,
  type ChannelOptions,
  credentials,
  InterceptingCall,
  type Interceptor,
  Metadata,
} from "@grpc/grpc-js";
export type {
  CallResponse,
  CallStreamResponse,
  Header,
  QueryParam,
  ResponseHead,
} from "../src/gen/keybroker/v1/proxy_pb.js";
export type { SecretMetadata } from "../src/gen/keybroker/v1/secrets_pb.js";
export type { KeybrokerTlsOptions } from "./channel.js";
export * from "./errors.js";
export type { KeybrokerRetryOptions } from "./retry.js";

export interface KeybrokerClientOptions {
  /** "host:port" of the broker's gRPC listener, e.g. "127.0.0.1:50051". */
  readonly address: string;
  /** This app's broker-issued caller key (sent as `x-keybroker-key`). */
  readonly callerKey: string;
  /**
   * Default: plaintext when every address of the target is loopback or a unix socket, TLS with the
   * system roots otherwise. Build them with this package's `credentials` (its grpc-js copy).
   */
  readonly credentials?: ChannelCredentials;
  /** TLS with a private CA and/or a client certificate (mTLS); instead of `credentials`. */
  readonly tls?: KeybrokerTlsOptions;
  /**
   * "round_robin" spreads calls over every address the target resolves to, e.g.
   * "dns:///keybroker-pods.NS.svc.cluster.local:50051" (a headless Service, docs/scaling.md).
   * grpc-js's default, "pick_first", keeps one connection to one replica.
   */
  readonly loadBalancing?: "pick_first" | "round_robin";
  /** Raw grpc-js channel options (keepalive, message sizes, ...). A retryPolicy in a service config is refused. */
  readonly channelOptions?: ChannelOptions;
  /**
   * grpc-js interceptors run on every call, e.g. to add tracing metadata or time calls. They see
   * the outgoing metadata, which holds the caller key and the user's token: never log it whole.
   */
  readonly interceptors?: readonly Interceptor[];
  /** Deadline for a call without its own `deadlineMs`; default 10 s. It covers every retry. */
  readonly defaultDeadlineMs?: number;
  /**
   * Retries of idempotent calls after UNAVAILABLE; off unless given. Only ListSecrets and
   * Call/CallStream with GET, HEAD or OPTIONS (CallStream until its first message) are retried;
   * PutSecret, DeleteSecret and any other proxied method are sent once.
   */
  readonly retry?: KeybrokerRetryOptions;
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
  if (!Number.isFinite(defaultDeadlineMs) || defaultDeadlineMs <= 0) {
    throw new TypeError("defaultDeadlineMs must be a number > 0");
  }
  const retryPolicy = retryPolicyOf(options.retry);
  const grpc = new Client(options.address, credentialsOf(options), {
    ...channelOptionsOf(options),
    ...(options.interceptors === undefined ? {} : { interceptors: [...options.interceptors] }),
  });

  /** Metadata and call options for one call; throws the typed error instead of sending junk. */
  function prepare(
    userToken: string,
    opts: KeybrokerCallOptions,
    deadline: number,
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
    return { metadata, callOptions: { deadline } };
  }

  /** The call's one deadline, shared by all its attempts. */
  function deadlineOf(opts: KeybrokerCallOptions): number {
    return Date.now() + (opts.deadlineMs ?? defaultDeadlineMs);
  }

  /**
   * Runs `attempt` until it succeeds, fails with something other than UNAVAILABLE, runs out of
   * attempts, or the next backoff would pass the deadline; `policy` is NO_RETRIES for a call
   * that is not idempotent.
   */
  async function withRetries<T>(
    policy: RetryPolicy,
    opts: KeybrokerCallOptions,
    deadline: number,
    attempt: () => Promise<T>,
  ): Promise<T> {
    for (let n = 1; ; n++) {
      try {
        return await attempt();
      } catch (err) {
        if (n >= policy.maxAttempts || !isRetryableFailure(err)) throw err;
        if (!(await waitBeforeRetry(backoffMs(policy, n), deadline, opts.signal))) throw err;
      }
    }
  }

  /** The policy for a proxied call: only safe HTTP methods may be sent twice. */
  function proxyPolicyOf(input: ProxyCallInput): RetryPolicy {
    return isSafeHttpMethod(input.method) ? retryPolicy : NO_RETRIES;
  }

  function unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    init: MessageInitShape<I>,
    userToken: string,
    opts: KeybrokerCallOptions,
    policy: RetryPolicy,
  ): Promise<MessageShape<O>> {
    const deadline = deadlineOf(opts);
    return withRetries(policy, opts, deadline, () => unaryAttempt(method, init, userToken, opts, deadline));
  }

  function unaryAttempt<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    init: MessageInitShape<I>,
    userToken: string,
    opts: KeybrokerCallOptions,
    deadline: number,
  ): Promise<MessageShape<O>> {
    return new Promise((resolve, reject) => {
      const secrets = [callerKey, userToken];
      let headerRequestId: string | undefined;
      let detach = noop;
      try {
        const { metadata, callOptions } = prepare(userToken, opts, deadline);
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

  /**
   * A server stream, retried under `policy` only while nothing has been received: once a
   * message was yielded, a failure ends the stream (a retry would repeat what the caller has).
   */
  async function* serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    init: MessageInitShape<I>,
    userToken: string,
    opts: KeybrokerCallOptions,
    policy: RetryPolicy,
  ): AsyncGenerator<MessageShape<O>, void, undefined> {
    const deadline = deadlineOf(opts);
    for (let n = 1; ; n++) {
      let received = false;
      try {
        for await (const message of serverStreamAttempt(method, init, userToken, opts, deadline)) {
          received = true;
          yield message;
        }
        return;
      } catch (err) {
        if (received || n >= policy.maxAttempts || !isRetryableFailure(err)) throw err;
        if (!(await waitBeforeRetry(backoffMs(policy, n), deadline, opts.signal))) throw err;
      }
    }
  }

  async function* serverStreamAttempt<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    init: MessageInitShape<I>,
    userToken: string,
    opts: KeybrokerCallOptions,
    deadline: number,
  ): AsyncGenerator<MessageShape<O>, void, undefined> {
    const secrets = [callerKey, userToken];
    const { metadata, callOptions } = prepare(userToken, opts, deadline);
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
      // Never retried: a second attempt could store a second version of the credential.
      const response = await unary(SecretService.method.putSecret, input, userToken, opts, NO_RETRIES);
      if (response.secret === undefined) {
        throw new InternalError("INTERNAL", "response carried no secret metadata", undefined);
      }
      return secretInfoOf(response.secret);
    },
    async listSecrets(userToken, filter = {}, opts = {}) {
      const response = await unary(SecretService.method.listSecrets, filter, userToken, opts, retryPolicy);
      return response.secrets.map(secretInfoOf);
    },
    async deleteSecret(userToken, secretId, opts = {}) {
      // Not retried: if the first attempt deleted it, the retry would answer NOT_FOUND.
      await unary(SecretService.method.deleteSecret, { secretId }, userToken, opts, NO_RETRIES);
    },
    call(userToken, input, opts = {}) {
      return unary(ProxyService.method.call, input, userToken, opts, proxyPolicyOf(input));
    },
    async *callStream(userToken, input, opts = {}) {
      const policy = proxyPolicyOf(input);
      for await (const message of serverStream(
        ProxyService.method.callStream,
        input,
        userToken,
        opts,
        policy,
      )) {
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
