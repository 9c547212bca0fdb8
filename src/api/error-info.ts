import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import {
  isRefusalReason,
  type RefusalReason,
  type RefusedCredential,
  refusedCredentialOf,
} from "../errors.js";
import { type ErrorInfo, ErrorInfoSchema, RetryInfoSchema } from "../gen/google/rpc/error_details_pb.js";
import { type Status, StatusSchema } from "../gen/google/rpc/status_pb.js";

/**
 * The machine-readable half of a refusal, as a standard google.rpc.ErrorInfo detail: `reason` is
 * the upper-case RefusalReason (ErrorInfo reasons match /[A-Z0-9_]+/), `domain` is ours, and
 * `metadata.credential` names the refused credential. Shared by the server, which writes it on
 * both transports, and the client, which reads it instead of parsing message text.
 */
export const ERROR_DOMAIN = "keybroker";

/** A refusal as the client sees it. */
export interface Refusal {
  readonly reason: RefusalReason;
  readonly credential: RefusedCredential;
}

/** The ErrorInfo detail for `reason`. */
export function errorInfoOf(reason: RefusalReason): MessageInitShape<typeof ErrorInfoSchema> {
  return {
    reason: reason.toUpperCase(),
    domain: ERROR_DOMAIN,
    metadata: { credential: refusedCredentialOf(reason) },
  };
}

/**
 * The RetryInfo detail of a refusal by a rate limit: when the limit's window ends. Whole
 * milliseconds, rounded up, so a client that waits exactly this long is not refused again.
 */
export function retryInfoOf(retryAfterMs: number): MessageInitShape<typeof RetryInfoSchema> {
  const ms = Math.max(0, Math.ceil(retryAfterMs));
  return { retryDelay: { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 } };
}

/**
 * The `grpc-status-details-bin` value for a failed call: google.rpc.Status with the ErrorInfo of
 * a refused credential and/or the RetryInfo of a rate limit.
 */
export function statusDetailsOf(
  code: number,
  message: string,
  reason: RefusalReason | undefined,
  retryAfterMs?: number,
): Buffer {
  const details = [];
  if (reason !== undefined)
    details.push(anyPack(ErrorInfoSchema, create(ErrorInfoSchema, errorInfoOf(reason))));
  if (retryAfterMs !== undefined) {
    details.push(anyPack(RetryInfoSchema, create(RetryInfoSchema, retryInfoOf(retryAfterMs))));
  }
  const status = create(StatusSchema, { code, message, details });
  const bytes = toBinary(StatusSchema, status);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * The refusal carried by a `grpc-status-details-bin` value, or undefined if there is none or it
 * is not ours (another domain, a reason this version does not know, undecodable bytes).
 */
export function refusalFromStatusDetails(bytes: Uint8Array): Refusal | undefined {
  let status: Status;
  try {
    status = fromBinary(StatusSchema, bytes);
  } catch {
    return undefined;
  }
  for (const detail of status.details) {
    const info = anyUnpack(detail, ErrorInfoSchema);
    if (info !== undefined) {
      const refusal = refusalOf(info);
      if (refusal !== undefined) return refusal;
    }
  }
  return undefined;
}

/** The RetryInfo delay a `grpc-status-details-bin` value carries, in ms; undefined if none. */
export function retryDelayFromStatusDetails(bytes: Uint8Array): number | undefined {
  let status: Status;
  try {
    status = fromBinary(StatusSchema, bytes);
  } catch {
    return undefined;
  }
  for (const detail of status.details) {
    const info = anyUnpack(detail, RetryInfoSchema);
    if (info?.retryDelay !== undefined) {
      return Number(info.retryDelay.seconds) * 1000 + Math.floor(info.retryDelay.nanos / 1_000_000);
    }
  }
  return undefined;
}

/** The refusal an ErrorInfo names, if it is one of ours. */
export function refusalOf(info: ErrorInfo): Refusal | undefined {
  if (info.domain !== ERROR_DOMAIN) return undefined;
  const reason = info.reason.toLowerCase();
  return isRefusalReason(reason) ? { reason, credential: refusedCredentialOf(reason) } : undefined;
}
