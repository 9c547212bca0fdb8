import {
  DecryptCommand,
  DescribeKeyCommand,
  GenerateDataKeyCommand,
  KMSClient,
  type KMSClientConfig,
  ReEncryptCommand,
} from "@aws-sdk/client-kms";
import { BrokerError } from "../errors.js";
import type { EncryptionContext, GeneratedDataKey, Keyring, KeyringCallOptions } from "./keyring.js";

const DATA_KEY_BYTES = 32;
/** Per-attempt deadline when none is configured (KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS). */
export const DEFAULT_ATTEMPT_TIMEOUT_MS = 2_000;

export interface KmsClientOptions {
  readonly region: string;
  /** A KMS-compatible endpoint (local-kms in compose, the test server); AWS's own when absent. */
  readonly endpoint?: string;
  /** Total attempts per call, first one included. */
  readonly maxAttempts: number;
  /** Static credentials; the SDK's default provider chain (env, IAM role) when absent. */
  readonly credentials?: KMSClientConfig["credentials"];
  /**
   * Deadline per attempt (default 2 s); a timed-out attempt is retried like a network error.
   * Short on purpose (F6): a hung KMS must not hold a call for attempts × a long timeout. The
   * caller's own deadline (KeyringCallOptions.signal) bounds the whole call on top of this.
   */
  readonly requestTimeoutMs?: number;
  readonly connectionTimeoutMs?: number;
}

/**
 * A KMS client with the SDK's "standard" retry mode: exponential backoff with full jitter,
 * at most `maxAttempts` attempts, and a retry-token bucket that stops retrying when most
 * calls fail, so a KMS outage is not multiplied by retry storms. It retries throttling
 * (incl. LimitExceededException), 5xx (KMSInternal, KeyUnavailable, DependencyTimeout),
 * timeouts and connection errors; never 4xx client errors such as DisabledException.
 */
export function createKmsClient(options: KmsClientOptions): KMSClient {
  return new KMSClient({
    region: options.region,
    maxAttempts: options.maxAttempts,
    retryMode: "standard",
    // The SDK otherwise rebuilds and sorts its whole middleware stack on every send(); cached per
    // command class, a ReEncrypt costs ~40% less client CPU (bench/tools/kms-sdk-cost.ts). The cache
    // is only used for a send() without options, so signalOption() passes none when it can.
    cacheMiddleware: true,
    ...(options.endpoint === undefined ? {} : { endpoint: options.endpoint }),
    ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
    requestHandler: {
      requestTimeout: options.requestTimeoutMs ?? DEFAULT_ATTEMPT_TIMEOUT_MS,
      // Without this, @smithy/node-http-handler 4.x only logs a warning when requestTimeout
      // passes and the attempt hangs on (up to the 300 s default socket timeout).
      throwOnRequestTimeout: true,
      connectionTimeout: options.connectionTimeoutMs ?? 2_000,
    },
  });
}

export interface AwsKmsKeyringOptions {
  readonly client: KMSClient;
  /** The master key for new data keys. A key ARN, so it compares equal to stored key ids. */
  readonly keyId: string;
}

/**
 * Resolves an alias or key id to the key ARN KMS reports on wrapped keys. Call once at
 * start-up: comparing a stored ARN with an alias would make every row look stale to rewrap.
 */
export async function resolveKmsKeyArn(
  client: KMSClient,
  keyId: string,
  signal?: AbortSignal,
): Promise<string> {
  return (await describeKmsKey(client, keyId, signal)).arn;
}

/** A key's ARN and whether it can wrap data keys now (enabled, symmetric encryption). */
export async function describeKmsKey(
  client: KMSClient,
  keyId: string,
  signal?: AbortSignal,
): Promise<{ readonly arn: string; readonly usable: boolean; readonly state: string }> {
  try {
    const out = await client.send(new DescribeKeyCommand({ KeyId: keyId }), signalOption(signal));
    const arn = out.KeyMetadata?.Arn;
    if (arn === undefined) throw new Error("DescribeKey returned no ARN");
    const state = out.KeyMetadata?.KeyState ?? (out.KeyMetadata?.Enabled === false ? "Disabled" : "Enabled");
    const usage = out.KeyMetadata?.KeyUsage ?? "ENCRYPT_DECRYPT";
    return { arn, state, usable: state === "Enabled" && usage === "ENCRYPT_DECRYPT" };
  } catch (err) {
    throw mapKmsError(err, signal);
  }
}

// Error classes by what the caller should do; names as the SDK sets `err.name`.
// Unavailable: transient, the SDK has already retried them (bounded): try again later.
const UNAVAILABLE = new Set([
  "ThrottlingException",
  "LimitExceededException",
  "KMSInternalException",
  "DependencyTimeoutException",
  // HTTP 500 and documented as "you can retry the request": the SDK retries it, so it is
  // transient, not a configuration problem.
  "KeyUnavailableException",
  "TimeoutError",
  "RequestTimeout",
  "RequestTimeoutException",
  "ExpiredTokenException",
]);
// Failed precondition: the key or our access to it is misconfigured; retrying cannot help,
// and the SDK does not retry them (HTTP 400, no retryable trait).
const MISCONFIGURED = new Set([
  "DisabledException",
  "AccessDeniedException",
  "KMSInvalidStateException",
  "NotFoundException",
  "InvalidKeyUsageException",
  "InvalidArnException",
  "UnrecognizedClientException",
  "InvalidSignatureException",
  "CredentialsProviderError",
]);
// Data loss: the stored wrapped key, or its encryption context, does not authenticate (D37).
const TAMPERED = new Set(["InvalidCiphertextException", "IncorrectKeyException"]);
const NETWORK_CODES = new Set([
  "ECONNRESET",
  "ECONNREFUSED",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
]);

/** Maps an SDK failure to a BrokerError with a generic message; the SDK error stays in `cause`. */
export function mapKmsError(err: unknown, signal: AbortSignal | undefined): BrokerError {
  if (err instanceof BrokerError) return err;
  const name = err instanceof Error ? err.name : "";
  const code = (err as { code?: unknown } | null)?.code;
  const fault = (err as { $fault?: unknown } | null)?.$fault;
  if (signal?.aborted || name === "AbortError") {
    return new BrokerError("deadline_exceeded", "key management service call was cancelled", { cause: err });
  }
  if (TAMPERED.has(name)) {
    return new BrokerError("data_loss", "stored data key failed its integrity check", { cause: err });
  }
  if (MISCONFIGURED.has(name)) {
    return new BrokerError("failed_precondition", "master key is not usable", { cause: err });
  }
  if (
    UNAVAILABLE.has(name) ||
    fault === "server" ||
    (typeof code === "string" && NETWORK_CODES.has(code)) ||
    !hasHttpResponse(err)
  ) {
    return new BrokerError("unavailable", "key management service unavailable", { cause: err });
  }
  return new BrokerError("internal", "key management service request failed", { cause: err });
}

// No HTTP status means the request never got an answer: a network failure, not a refusal.
function hasHttpResponse(err: unknown): boolean {
  const status = (err as { $metadata?: { httpStatusCode?: unknown } } | null)?.$metadata?.httpStatusCode;
  return typeof status === "number";
}

/** The send() options for `signal`: none at all without one, so the SDK's middleware cache applies. */
export function signalOption(signal: AbortSignal | undefined): { abortSignal: AbortSignal } | undefined {
  return signal === undefined ? undefined : { abortSignal: signal };
}

// The SDK's buffer is copied into one of ours (never the allocUnsafe pool) and zeroed.
function takeDataKey(plaintext: Uint8Array | undefined): Buffer {
  if (plaintext?.length !== DATA_KEY_BYTES) {
    plaintext?.fill(0);
    throw new BrokerError("internal", "key management service returned a malformed data key");
  }
  const key = Buffer.alloc(DATA_KEY_BYTES);
  key.set(plaintext);
  plaintext.fill(0);
  return key;
}

// KMS answered under another key than the row names. It refuses that itself when given KeyId
// (IncorrectKeyException); this is the second check, on what it says it used (M2).
function wrongKey(expected: string, reported: string): BrokerError {
  return new BrokerError("data_loss", "stored data key failed its integrity check", {
    cause: new Error(`wrapped under ${reported}, but the row names ${expected}`),
  });
}

function required<T>(value: T | undefined, what: string): T {
  if (value === undefined) {
    throw new BrokerError("internal", "key management service returned an incomplete response", {
      cause: new Error(`missing ${what}`),
    });
  }
  return value;
}

/**
 * The production keyring over AWS KMS. The data key's plaintext is generated inside KMS,
 * and rotation (ReEncrypt) never brings it out of KMS (T6). The encryption context is
 * passed on every call; KMS authenticates it and records it in CloudTrail, which is why
 * it only ever holds HMAC'd user refs (D38).
 */
export function createAwsKmsKeyring(options: AwsKmsKeyringOptions): Keyring {
  const { client, keyId } = options;

  async function call<T>(send: (signal: AbortSignal | undefined) => Promise<T>, opts?: KeyringCallOptions) {
    const signal = opts?.signal;
    if (signal?.aborted) throw mapKmsError(signal.reason, signal);
    try {
      return await send(signal);
    } catch (err) {
      throw mapKmsError(err, signal);
    }
  }

  const mutable = (context: EncryptionContext): Record<string, string> => ({ ...context });

  return {
    kind: "aws-kms",

    currentKeyId: () => keyId,

    generateDataKey: (context, opts) =>
      call(async (signal): Promise<GeneratedDataKey> => {
        const out = await client.send(
          new GenerateDataKeyCommand({
            KeyId: keyId,
            KeySpec: "AES_256",
            EncryptionContext: mutable(context),
          }),
          signalOption(signal),
        );
        try {
          const wrapped = required(out.CiphertextBlob, "CiphertextBlob");
          const wrappedBy = required(out.KeyId, "KeyId");
          return { plaintext: takeDataKey(out.Plaintext), wrapped, keyId: wrappedBy };
        } finally {
          out.Plaintext?.fill(0);
        }
      }, opts),

    decrypt: (wrapped, context, opts) =>
      call(async (signal) => {
        // KeyId: KMS refuses (IncorrectKeyException) a ciphertext made under any other key,
        // so a row cannot point us at a key its writer controls (M2).
        const out = await client.send(
          new DecryptCommand({
            CiphertextBlob: wrapped.wrapped,
            KeyId: wrapped.keyId,
            EncryptionContext: mutable(context),
          }),
          signalOption(signal),
        );
        try {
          const unwrappedBy = required(out.KeyId, "KeyId");
          if (unwrappedBy !== wrapped.keyId) throw wrongKey(wrapped.keyId, unwrappedBy);
          return { plaintext: takeDataKey(out.Plaintext), keyId: unwrappedBy };
        } finally {
          out.Plaintext?.fill(0);
        }
      }, opts),

    reEncrypt: (wrapped, context, destinationKeyId, opts) =>
      call(async (signal) => {
        // Same context on both sides: the rewrapped key stays bound to the same user.
        const out = await client.send(
          new ReEncryptCommand({
            CiphertextBlob: wrapped.wrapped,
            SourceKeyId: wrapped.keyId,
            SourceEncryptionContext: mutable(context),
            DestinationKeyId: destinationKeyId,
            DestinationEncryptionContext: mutable(context),
          }),
          signalOption(signal),
        );
        const source = required(out.SourceKeyId, "SourceKeyId");
        if (source !== wrapped.keyId) throw wrongKey(wrapped.keyId, source);
        return {
          wrapped: required(out.CiphertextBlob, "CiphertextBlob"),
          keyId: required(out.KeyId, "KeyId"),
        };
      }, opts),
  };
}
