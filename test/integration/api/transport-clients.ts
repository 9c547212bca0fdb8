/**
 * One calling convention over every client/server pair the broker supports, so a single
 * suite can prove they all behave the same. Results are normalised to plain values: Connect
 * gives bigint and Uint8Array where proto-loader gives string and Buffer.
 */
import { inspect } from "node:util";
import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { type Client as ConnectClient, ConnectError, createClient } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import type { Metadata, ServiceError } from "@grpc/grpc-js";
import { type ErrorInfo, ErrorInfoSchema } from "../../../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../../src/gen/google/rpc/status_pb.js";
import { ProxyService } from "../../../src/gen/keybroker/v1/proxy_pb.js";
import { SecretService } from "../../../src/gen/keybroker/v1/secrets_pb.js";
import {
  asServiceError,
  createGrpcClients,
  serverStream,
  unary,
  type WireMessage,
} from "../../support/grpc-client.js";

/** Raw request headers, repeats allowed (e.g. two `authorization` values). */
export type RawHeaders = ReadonlyArray<readonly [string, string]>;

export type Outcome<T> =
  | { readonly ok: true; readonly value: T; readonly requestId: string | undefined }
  | {
      readonly ok: false;
      readonly code: number;
      readonly message: string;
      readonly requestId: string | undefined;
      /** Everything the client holds about the error, for leak checks. */
      readonly dump: string;
      /** The google.rpc.ErrorInfo detail, decoded by each client library's own means. */
      readonly errorInfo: WireErrorInfo | undefined;
    };

/** An ErrorInfo detail as plain values. */
export interface WireErrorInfo {
  readonly reason: string;
  readonly domain: string;
  readonly metadata: Readonly<Record<string, string>>;
}

/** A secret's metadata as every transport should deliver it. */
export interface ListedSecret {
  id: string;
  provider: string;
  label: string;
  version: number;
  fieldNames: string[];
  hint: string;
  createdAtSeconds: string | undefined;
}

/** A streamed proxy response: the head's status, then the body chunks joined. */
export interface StreamedResponse {
  parts: string[];
  status: number | undefined;
  body: string;
}

export interface TransportClient {
  listSecrets(provider: string, headers?: RawHeaders): Promise<Outcome<ListedSecret[]>>;
  callStream(path: string, body: string): Promise<Outcome<StreamedResponse>>;
  /** Like callStream but keeps what arrived before a failure. */
  callStreamPartial(
    path: string,
    body: string,
  ): Promise<{ parts: string[]; outcome: Outcome<StreamedResponse> }>;
  close(): void;
}

/** grpc-js with proto-loader, as the main app calls the broker. */
export function grpcJsClient(address: string): TransportClient {
  const clients = createGrpcClients(address);
  const requestIdOf = (values: unknown[]) => (typeof values[0] === "string" ? values[0] : undefined);
  // A failed call's request id is in the trailers when the server answered trailers-only
  // (grpc-js server), in the initial headers when it sent headers first (connect server).
  const failure = (err: unknown, headers: Metadata | undefined) => {
    const e: ServiceError = asServiceError(err);
    return {
      ok: false as const,
      code: e.code,
      message: e.details,
      requestId: requestIdOf([...e.metadata.get("x-request-id"), ...(headers?.get("x-request-id") ?? [])]),
      dump: inspect(e, { depth: 6 }),
      errorInfo: errorInfoOfTrailers(e.metadata),
    };
  };
  const streamed = (messages: WireMessage[]) => toStreamed(messages.map(partOfWire));
  return {
    async listSecrets(provider, headers = []) {
      let initial: Metadata | undefined;
      try {
        const { response, headers: md } = await unary(
          clients.secrets,
          "ListSecrets",
          { provider },
          { metadata: headers, onHeaders: (h) => (initial = h) },
        );
        const secrets = (response.secrets as WireMessage[]).map((s) => ({
          id: s.id as string,
          provider: s.provider as string,
          label: s.label as string,
          version: s.version as number,
          fieldNames: s.fieldNames as string[],
          hint: s.hint as string,
          createdAtSeconds: (s.createdAt as { seconds: string } | null)?.seconds,
        }));
        return { ok: true, value: secrets, requestId: requestIdOf(md.get("x-request-id")) };
      } catch (err) {
        return failure(err, initial);
      }
    },
    async callStream(path, body) {
      return (await this.callStreamPartial(path, body)).outcome;
    },
    async callStreamPartial(path, body) {
      const parts: string[] = [];
      let initial: Metadata | undefined;
      try {
        const request = { path, body: Buffer.from(body) };
        const onHeaders = (h: Metadata) => {
          initial = h;
        };
        const { messages, headers } = await serverStream(
          clients.proxy,
          "CallStream",
          request,
          { onHeaders },
          (m) => parts.push(partOfWire(m).part),
        );
        const value = streamed(messages);
        return { parts, outcome: { ok: true, value, requestId: requestIdOf(headers.get("x-request-id")) } };
      } catch (err) {
        return { parts, outcome: failure(err, initial) };
      }
    },
    close: () => clients.close(),
  };
}

type ConnectFlavour = "connect" | "grpc-web" | "grpc";

/** A connect-node client: the Connect protocol, gRPC-Web or gRPC, over HTTP/1.1 or HTTP/2. */
export function connectClient(
  baseUrl: string,
  flavour: ConnectFlavour,
  httpVersion: "1.1" | "2",
): TransportClient {
  const sessions = httpVersion === "2" ? new Http2SessionManager(baseUrl) : undefined;
  const transportOptions =
    sessions === undefined
      ? { baseUrl, httpVersion: "1.1" as const }
      : { baseUrl, httpVersion: "2" as const, sessionManager: sessions };
  const transport =
    flavour === "connect"
      ? createConnectTransport(transportOptions)
      : flavour === "grpc-web"
        ? createGrpcWebTransport(transportOptions)
        : createGrpcTransport(transportOptions);
  const secrets: ConnectClient<typeof SecretService> = createClient(SecretService, transport);
  const proxy: ConnectClient<typeof ProxyService> = createClient(ProxyService, transport);
  const failure = (err: unknown) => {
    const e = ConnectError.from(err);
    return {
      ok: false as const,
      code: e.code as number,
      message: e.rawMessage,
      requestId: e.metadata.get("x-request-id") ?? undefined,
      dump: inspect(e, { depth: 6 }),
      errorInfo: plainErrorInfo(e.findDetails(ErrorInfoSchema)[0]),
    };
  };
  return {
    async listSecrets(provider, headers = []) {
      let requestId: string | undefined;
      try {
        const response = await secrets.listSecrets(
          { provider },
          {
            headers: headers.map(([k, v]) => [k, v]),
            onHeader: (h) => {
              requestId = h.get("x-request-id") ?? undefined;
            },
          },
        );
        const value = response.secrets.map((s) => ({
          id: s.id,
          provider: s.provider,
          label: s.label,
          version: s.version,
          fieldNames: [...s.fieldNames],
          hint: s.hint,
          createdAtSeconds: s.createdAt === undefined ? undefined : String(s.createdAt.seconds),
        }));
        return { ok: true, value, requestId };
      } catch (err) {
        return failure(err);
      }
    },
    async callStream(path, body) {
      return (await this.callStreamPartial(path, body)).outcome;
    },
    async callStreamPartial(path, body) {
      const parts: string[] = [];
      const messages: Array<{ part: string; status?: number; chunk?: Buffer }> = [];
      let requestId: string | undefined;
      try {
        const stream = proxy.callStream(
          { path, body: Buffer.from(body) },
          {
            onHeader: (h) => {
              requestId = h.get("x-request-id") ?? undefined;
            },
          },
        );
        for await (const message of stream) {
          const part = message.part;
          const normalised =
            part.case === "head"
              ? { part: "head", status: part.value.status }
              : part.case === "chunk"
                ? { part: "chunk", chunk: Buffer.from(part.value) }
                : { part: "none" };
          messages.push(normalised);
          parts.push(normalised.part);
        }
        return { parts, outcome: { ok: true, value: toStreamed(messages), requestId } };
      } catch (err) {
        return { parts, outcome: failure(err) };
      }
    },
    close: () => sessions?.abort(),
  };
}

/** The ErrorInfo in a grpc-js error's `grpc-status-details-bin` trailer (a google.rpc.Status). */
function errorInfoOfTrailers(trailers: Metadata): WireErrorInfo | undefined {
  const bin = trailers.get("grpc-status-details-bin")[0];
  if (!(bin instanceof Buffer)) {
    return undefined;
  }
  const details = fromBinary(StatusSchema, bin).details;
  return plainErrorInfo(
    details.map((any) => anyUnpack(any, ErrorInfoSchema)).find((info) => info !== undefined),
  );
}

function plainErrorInfo(info: ErrorInfo | undefined): WireErrorInfo | undefined {
  return info === undefined
    ? undefined
    : { reason: info.reason, domain: info.domain, metadata: { ...info.metadata } };
}

function partOfWire(message: WireMessage): { part: string; status?: number; chunk?: Buffer } {
  if (message.part === "head") {
    return { part: "head", status: (message.head as { status: number }).status };
  }
  if (message.part === "chunk") {
    return { part: "chunk", chunk: message.chunk as Buffer };
  }
  return { part: "none" };
}

function toStreamed(messages: Array<{ part: string; status?: number; chunk?: Buffer }>): StreamedResponse {
  return {
    parts: messages.map((m) => m.part),
    status: messages.find((m) => m.part === "head")?.status,
    body: Buffer.concat(messages.flatMap((m) => (m.chunk === undefined ? [] : [m.chunk]))).toString(),
  };
}
