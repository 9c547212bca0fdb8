import { create, fromBinary, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import {
  isRefusalReason,
  type RefusalReason,
  type RefusedCredential,
  refusedCredentialOf,
} from "../errors.js";
import { type ErrorInfo, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";
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

/** The `grpc-status-details-bin` value for a failed call: google.rpc.Status with the ErrorInfo. */
export function statusDetailsOf(code: number, message: string, reason: RefusalReason): Buffer {
  const status = create(StatusSchema, {
    code,
    message,
    details: [anyPack(ErrorInfoSchema, create(ErrorInfoSchema, errorInfoOf(reason)))],
  });
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

/** The refusal an ErrorInfo names, if it is one of ours. */
export function refusalOf(info: ErrorInfo): Refusal | undefined {
  if (info.domain !== ERROR_DOMAIN) return undefined;
  const reason = info.reason.toLowerCase();
  return isRefusalReason(reason) ? { reason, credential: refusedCredentialOf(reason) } : undefined;
}
