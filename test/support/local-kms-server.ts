import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  randomBytes,
  randomUUID,
  timingSafeEqual,
} from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/**
 * A local stand-in for AWS KMS, speaking the JSON protocol exactly as `@aws-sdk/client-kms`
 * sends it (POST /, `x-amz-target: TrentService.<Op>`, application/x-amz-json-1.1, base64
 * blobs), so tests exercise the real SDK: signing, retries, error deserialisation, abort.
 * No npm package emulates KMS; in docker-compose, nsmithuk/local-kms plays this role.
 *
 * Faithful where the broker depends on it: ciphertext blobs name their key, the encryption
 * context is authenticated as AAD (a mismatch is InvalidCiphertextException), disabled keys
 * raise DisabledException, errors use KMS's names and HTTP statuses. HMAC keys (KeySpec HMAC_256,
 * KeyUsage GENERATE_VERIFY_MAC) make and check MACs (GenerateMac / VerifyMac, HMAC_SHA_256) and
 * nothing else; a MAC that does not verify is KMSInvalidMacException, as AWS answers it. Not a security
 * boundary: key material lives in memory and SigV4 signatures are required but not verified.
 */

const ACCOUNT = "000000000000";
const BLOB_FORMAT = 0x01;
const MAX_BODY_BYTES = 1024 * 1024;

export interface LocalKmsFaults {
  /** The next N calls answer 400 ThrottlingException. */
  readonly throttleNext?: number;
  /** The next N calls fail: 500 KMSInternalException unless `failWith` names another error. */
  readonly failNext?: number;
  /** The error `failNext` answers with, e.g. { type: "AccessDeniedException", status: 400 }. */
  readonly failWith?: { readonly type: string; readonly status: number };
  /** Delay before every answer. */
  readonly latencyMs?: number;
  /** While true, every connection is destroyed without an answer. */
  readonly down?: boolean;
}

export interface LocalKmsServerOptions {
  readonly port?: number;
  readonly region?: string;
  readonly latencyMs?: number;
}

/** A running local KMS and the controls tests use to shape it. */
export interface LocalKmsServer {
  /** e.g. "http://127.0.0.1:41234": pass as the KMS client endpoint. */
  readonly endpoint: string;
  readonly region: string;
  /** Creates an enabled key (symmetric encryption, or HMAC_256 for MACs); returns its ARN. */
  createKey(description?: string, spec?: KeySpec): string;
  createAlias(name: string, keyId: string): void;
  disableKey(keyId: string): void;
  enableKey(keyId: string): void;
  setFaults(faults: LocalKmsFaults): void;
  /** Requests received (faulted ones included), for one operation or all. */
  callCount(op?: string): number;
  resetCounts(): void;
  close(): Promise<void>;
}

/** The two kinds of key the broker uses: a master key, and a checkpoint MAC key (M1). */
export type KeySpec = "SYMMETRIC_DEFAULT" | "HMAC_256";

interface Key {
  readonly spec: KeySpec;
  readonly id: string;
  readonly arn: string;
  readonly material: Buffer;
  readonly description: string;
  readonly createdAt: number;
  enabled: boolean;
}

class KmsFault extends Error {
  constructor(
    readonly type: string,
    message: string,
    readonly status = 400,
  ) {
    super(message);
  }
}

type Json = Record<string, unknown>;

function contextAad(keyId: string, context: unknown): Buffer {
  if (context !== undefined && (typeof context !== "object" || context === null || Array.isArray(context))) {
    throw new KmsFault("ValidationException", "EncryptionContext must be a map of strings");
  }
  const entries = Object.entries((context ?? {}) as Json).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [, value] of entries) {
    if (typeof value !== "string")
      throw new KmsFault("ValidationException", "EncryptionContext must be strings");
  }
  return Buffer.from(JSON.stringify([keyId, entries]), "utf8");
}

function blobArg(body: Json, name: string): Buffer {
  const value = body[name];
  if (typeof value !== "string" || value.length === 0) {
    throw new KmsFault("ValidationException", `${name} is required`);
  }
  return Buffer.from(value, "base64");
}

function stringArg(body: Json, name: string): string {
  const value = body[name];
  if (typeof value !== "string" || value.length === 0) {
    throw new KmsFault("ValidationException", `${name} is required`);
  }
  return value;
}

export async function startLocalKmsServer(options: LocalKmsServerOptions = {}): Promise<LocalKmsServer> {
  const region = options.region ?? "us-east-1";
  const keys = new Map<string, Key>();
  const aliases = new Map<string, string>();
  const counts = new Map<string, number>();
  const timers = new Set<NodeJS.Timeout>();
  let throttleNext = 0;
  let failNext = 0;
  let failWith = { type: "KMSInternalException", status: 500 };
  let latencyMs = options.latencyMs ?? 0;
  let down = false;

  function resolveKey(ref: string): Key {
    let id = ref;
    const arnPrefix = `arn:aws:kms:${region}:${ACCOUNT}:`;
    if (id.startsWith(arnPrefix)) id = id.slice(arnPrefix.length);
    if (id.startsWith("key/")) id = id.slice("key/".length);
    if (id.startsWith("alias/")) id = aliases.get(id) ?? "";
    const key = keys.get(id);
    if (key === undefined) throw new KmsFault("NotFoundException", `Key '${ref}' does not exist`);
    return key;
  }

  function enabledKey(ref: string, spec: KeySpec = "SYMMETRIC_DEFAULT"): Key {
    const key = resolveKey(ref);
    if (!key.enabled) throw new KmsFault("DisabledException", `${key.arn} is disabled.`);
    if (key.spec !== spec) {
      throw new KmsFault("InvalidKeyUsageException", `${key.arn} is not a ${spec} key for this operation`);
    }
    return key;
  }

  function macArgs(body: Json): { key: Key; message: Buffer } {
    const key = enabledKey(stringArg(body, "KeyId"), "HMAC_256");
    if (body.MacAlgorithm !== "HMAC_SHA_256") {
      throw new KmsFault("InvalidKeyUsageException", "HMAC_256 keys support MacAlgorithm HMAC_SHA_256");
    }
    const message = blobArg(body, "Message");
    if (message.length > 4096) throw new KmsFault("ValidationException", "Message is at most 4096 bytes");
    return { key, message };
  }

  function metadata(key: Key): Json {
    return {
      AWSAccountId: ACCOUNT,
      KeyId: key.id,
      Arn: key.arn,
      CreationDate: key.createdAt,
      Enabled: key.enabled,
      Description: key.description,
      KeyUsage: key.spec === "HMAC_256" ? "GENERATE_VERIFY_MAC" : "ENCRYPT_DECRYPT",
      KeyState: key.enabled ? "Enabled" : "Disabled",
      Origin: "AWS_KMS",
      KeyManager: "CUSTOMER",
      KeySpec: key.spec,
      CustomerMasterKeySpec: key.spec,
      ...(key.spec === "HMAC_256"
        ? { MacAlgorithms: ["HMAC_SHA_256"] }
        : { EncryptionAlgorithms: ["SYMMETRIC_DEFAULT"] }),
      MultiRegion: false,
    };
  }

  function createKey(description = "", spec: KeySpec = "SYMMETRIC_DEFAULT"): string {
    const id = randomUUID();
    const arn = `arn:aws:kms:${region}:${ACCOUNT}:key/${id}`;
    keys.set(id, {
      spec,
      id,
      arn,
      material: randomBytes(32),
      description,
      createdAt: Date.now() / 1000,
      enabled: true,
    });
    return arn;
  }

  function encrypt(key: Key, plaintext: Buffer, context: unknown): Buffer {
    const id = Buffer.from(key.id, "utf8");
    const nonce = randomBytes(12);
    const cipher = createCipheriv("aes-256-gcm", key.material, nonce);
    cipher.setAAD(contextAad(key.id, context));
    const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
    return Buffer.concat([Uint8Array.of(BLOB_FORMAT, id.length), id, nonce, body, cipher.getAuthTag()]);
  }

  function decrypt(blob: Buffer, context: unknown, expectedKeyRef: unknown): { key: Key; plaintext: Buffer } {
    const invalid = new KmsFault("InvalidCiphertextException", "");
    if (blob.length < 2 || blob[0] !== BLOB_FORMAT) throw invalid;
    const idLength = blob[1] ?? 0;
    if (blob.length < 2 + idLength + 12 + 16) throw invalid;
    const id = blob.subarray(2, 2 + idLength).toString("utf8");
    const key = keys.get(id);
    if (key === undefined) throw invalid;
    if (typeof expectedKeyRef === "string" && resolveKey(expectedKeyRef).id !== key.id) {
      throw new KmsFault("IncorrectKeyException", "The key ID in the request does not identify the key used");
    }
    if (!key.enabled) throw new KmsFault("DisabledException", `${key.arn} is disabled.`);
    if (key.spec !== "SYMMETRIC_DEFAULT")
      throw new KmsFault("InvalidKeyUsageException", "not an encryption key");
    const nonce = blob.subarray(2 + idLength, 2 + idLength + 12);
    const tag = blob.subarray(blob.length - 16);
    try {
      const decipher = createDecipheriv("aes-256-gcm", key.material, nonce);
      decipher.setAAD(contextAad(key.id, context));
      decipher.setAuthTag(tag);
      const plaintext = Buffer.concat([
        decipher.update(blob.subarray(2 + idLength + 12, -16)),
        decipher.final(),
      ]);
      return { key, plaintext };
    } catch (err) {
      if (err instanceof KmsFault) throw err;
      throw invalid;
    }
  }

  const operations: Record<string, (body: Json) => Json> = {
    CreateKey: (body) => {
      const spec = body.KeySpec ?? "SYMMETRIC_DEFAULT";
      if (spec !== "SYMMETRIC_DEFAULT" && spec !== "HMAC_256") {
        throw new KmsFault("ValidationException", "KeySpec must be SYMMETRIC_DEFAULT or HMAC_256");
      }
      const usage = body.KeyUsage ?? (spec === "HMAC_256" ? undefined : "ENCRYPT_DECRYPT");
      if (usage !== (spec === "HMAC_256" ? "GENERATE_VERIFY_MAC" : "ENCRYPT_DECRYPT")) {
        throw new KmsFault("ValidationException", "KeyUsage does not fit KeySpec");
      }
      const arn = createKey(typeof body.Description === "string" ? body.Description : "", spec);
      return { KeyMetadata: metadata(resolveKey(arn)) };
    },
    CreateAlias: (body) => {
      const name = stringArg(body, "AliasName");
      if (!name.startsWith("alias/"))
        throw new KmsFault("ValidationException", "AliasName must begin with alias/");
      if (aliases.has(name)) throw new KmsFault("AlreadyExistsException", `${name} already exists`);
      aliases.set(name, resolveKey(stringArg(body, "TargetKeyId")).id);
      return {};
    },
    DescribeKey: (body) => ({ KeyMetadata: metadata(resolveKey(stringArg(body, "KeyId"))) }),
    DisableKey: (body) => {
      resolveKey(stringArg(body, "KeyId")).enabled = false;
      return {};
    },
    EnableKey: (body) => {
      resolveKey(stringArg(body, "KeyId")).enabled = true;
      return {};
    },
    Encrypt: (body) => {
      const key = enabledKey(stringArg(body, "KeyId"));
      const blob = encrypt(key, blobArg(body, "Plaintext"), body.EncryptionContext);
      return {
        CiphertextBlob: blob.toString("base64"),
        KeyId: key.arn,
        EncryptionAlgorithm: "SYMMETRIC_DEFAULT",
      };
    },
    Decrypt: (body) => {
      const { key, plaintext } = decrypt(blobArg(body, "CiphertextBlob"), body.EncryptionContext, body.KeyId);
      return {
        KeyId: key.arn,
        Plaintext: plaintext.toString("base64"),
        EncryptionAlgorithm: "SYMMETRIC_DEFAULT",
      };
    },
    GenerateDataKey: (body) => {
      const key = enabledKey(stringArg(body, "KeyId"));
      const spec = body.KeySpec;
      const size =
        spec === "AES_256"
          ? 32
          : spec === "AES_128"
            ? 16
            : typeof body.NumberOfBytes === "number"
              ? body.NumberOfBytes
              : 0;
      if (!Number.isInteger(size) || size < 1 || size > 1024) {
        throw new KmsFault("ValidationException", "KeySpec or NumberOfBytes is required");
      }
      const plaintext = randomBytes(size);
      const blob = encrypt(key, plaintext, body.EncryptionContext);
      return {
        CiphertextBlob: blob.toString("base64"),
        Plaintext: plaintext.toString("base64"),
        KeyId: key.arn,
      };
    },
    GenerateMac: (body) => {
      const { key, message } = macArgs(body);
      const mac = createHmac("sha256", key.material).update(message).digest();
      return { Mac: mac.toString("base64"), MacAlgorithm: "HMAC_SHA_256", KeyId: key.arn };
    },
    VerifyMac: (body) => {
      const { key, message } = macArgs(body);
      const candidate = blobArg(body, "Mac");
      const expected = createHmac("sha256", key.material).update(message).digest();
      // AWS answers an invalid MAC with an error, never MacValid: false.
      if (candidate.length !== expected.length || !timingSafeEqual(candidate, expected)) {
        throw new KmsFault("KMSInvalidMacException", "");
      }
      return { KeyId: key.arn, MacValid: true, MacAlgorithm: "HMAC_SHA_256" };
    },
    ReEncrypt: (body) => {
      const source = decrypt(blobArg(body, "CiphertextBlob"), body.SourceEncryptionContext, body.SourceKeyId);
      const destination = enabledKey(stringArg(body, "DestinationKeyId"));
      const blob = encrypt(destination, source.plaintext, body.DestinationEncryptionContext);
      return {
        CiphertextBlob: blob.toString("base64"),
        SourceKeyId: source.key.arn,
        KeyId: destination.arn,
        SourceEncryptionAlgorithm: "SYMMETRIC_DEFAULT",
        DestinationEncryptionAlgorithm: "SYMMETRIC_DEFAULT",
      };
    },
  };

  function send(res: ServerResponse, status: number, body: Json): void {
    if (res.destroyed) return;
    res.writeHead(status, {
      "content-type": "application/x-amz-json-1.1",
      "x-amzn-requestid": randomUUID(),
    });
    res.end(JSON.stringify(body));
  }

  function sendFault(res: ServerResponse, fault: KmsFault): void {
    send(res, fault.status, { __type: fault.type, message: fault.message });
  }

  async function readBody(req: IncomingMessage): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > MAX_BODY_BYTES) throw new KmsFault("ValidationException", "request too large", 413);
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  function delay(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        timers.delete(timer);
        resolve();
      }, ms);
      timers.add(timer);
    });
  }

  async function answer(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const target = req.headers["x-amz-target"];
    const op = typeof target === "string" && target.startsWith("TrentService.") ? target.slice(13) : "";
    counts.set(op, (counts.get(op) ?? 0) + 1);
    if (down) {
      req.socket.destroy();
      return;
    }
    try {
      const auth = req.headers.authorization;
      if (
        typeof auth !== "string" ||
        !/^AWS4-HMAC-SHA256 Credential=\S+, ?SignedHeaders=\S+, ?Signature=/.test(auth)
      ) {
        throw new KmsFault("MissingAuthenticationTokenException", "Missing or malformed SigV4 authorization");
      }
      if (req.method !== "POST" || req.url !== "/")
        throw new KmsFault("UnknownOperationException", "POST / only");
      if (!String(req.headers["content-type"]).startsWith("application/x-amz-json-1.1")) {
        throw new KmsFault("SerializationException", "content-type must be application/x-amz-json-1.1");
      }
      const handler = operations[op];
      if (handler === undefined) throw new KmsFault("UnknownOperationException", `Unknown operation ${op}`);
      const raw = await readBody(req);
      if (latencyMs > 0) await delay(latencyMs);
      if (throttleNext > 0) {
        throttleNext -= 1;
        throw new KmsFault("ThrottlingException", "Rate exceeded");
      }
      if (failNext > 0) {
        failNext -= 1;
        throw new KmsFault(failWith.type, "injected failure", failWith.status);
      }
      let body: unknown;
      try {
        body = JSON.parse(raw.toString("utf8") || "{}");
      } catch {
        throw new KmsFault("SerializationException", "body is not JSON");
      }
      if (typeof body !== "object" || body === null || Array.isArray(body)) {
        throw new KmsFault("SerializationException", "body must be a JSON object");
      }
      send(res, 200, handler(body as Json));
    } catch (err) {
      sendFault(
        res,
        err instanceof KmsFault ? err : new KmsFault("KMSInternalException", "internal failure", 500),
      );
    }
  }

  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    void answer(req, res);
  });
  server.on("connection", (socket) => {
    if (down) {
      socket.destroy();
      return;
    }
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;

  return {
    endpoint: `http://127.0.0.1:${port}`,
    region,
    createKey,
    createAlias(name, keyId) {
      const alias = name.startsWith("alias/") ? name : `alias/${name}`;
      aliases.set(alias, resolveKey(keyId).id);
    },
    disableKey(keyId) {
      resolveKey(keyId).enabled = false;
    },
    enableKey(keyId) {
      resolveKey(keyId).enabled = true;
    },
    setFaults(faults) {
      if (faults.throttleNext !== undefined) throttleNext = faults.throttleNext;
      if (faults.failNext !== undefined) failNext = faults.failNext;
      if (faults.failWith !== undefined) failWith = { ...faults.failWith };
      if (faults.latencyMs !== undefined) latencyMs = faults.latencyMs;
      if (faults.down !== undefined) {
        down = faults.down;
        // Going down drops the SDK's kept-alive connections too, as a crashed server would.
        if (down) for (const socket of sockets) socket.destroy();
      }
    },
    callCount: (op) =>
      op === undefined ? [...counts.values()].reduce((a, b) => a + b, 0) : (counts.get(op) ?? 0),
    resetCounts: () => counts.clear(),
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      for (const key of keys.values()) key.material.fill(0);
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((err) => (err ? reject(err) : resolve())));
    },
  };
}
