import { invalidArgument } from "../errors.js";
import type { OperationClass } from "../policy/operation-class.js";
import { parseGrant } from "../policy/operation-grant.js";
import type { StoredConnection } from "../store/secrets.repository.js";

/** Input limits. Exported so tests and docs state the same numbers the code enforces. */
export const SECRET_LIMITS = {
  maxFields: 8,
  maxFieldValueBytes: 8192,
  maxLabelChars: 64,
  maxSecretsPerUser: 1000,
  /** Versions kept per secret (current + previous); older ones are deleted. */
  versionsKept: 2,
} as const;

const PROVIDER_ID = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const FIELD_NAME = /^[a-z][a-z0-9_]{0,31}$/;
// Letters, marks, numbers, punctuation, symbols and plain spaces: no control, format or
// separator characters that could forge log lines or hide text (\p{C}, \u2028, ...).
const LABEL = /^[\p{L}\p{M}\p{N}\p{P}\p{S} ]+$/u;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export interface PutSecretInput {
  readonly secretId: string | undefined;
  readonly provider: string;
  readonly label: string | undefined;
  /** Field values as bytes; the service zeroes them once sealed. */
  readonly fields: ReadonlyMap<string, Buffer>;
  /** The operation classes the key may be used for; absent: the provider's default grant. */
  readonly grant?: readonly OperationClass[];
  /**
   * Set only by the OAuth connect and refresh flows (never parsed from a request): the fields are
   * a connection's tokens and this is its state, written with the version (issue 15).
   */
  readonly connection?: StoredConnection;
}

export function parseProviderId(value: string): string {
  if (!PROVIDER_ID.test(value)) {
    throw invalidArgument(
      "provider must be 1-32 characters of a-z, 0-9, '_' or '-', starting with a letter or digit",
    );
  }
  return value;
}

export function parseLabel(value: string): string {
  if (value.length === 0 || [...value].length > SECRET_LIMITS.maxLabelChars) {
    throw invalidArgument(`label must be 1-${SECRET_LIMITS.maxLabelChars} characters`);
  }
  if (!LABEL.test(value) || value.trim() !== value) {
    throw invalidArgument("label may hold letters, digits, punctuation, symbols and inner spaces only");
  }
  return value;
}

export function parseSecretId(value: string): string {
  if (!UUID.test(value)) throw invalidArgument("secret_id must be a lowercase UUID");
  return value;
}

/**
 * Validates a PutSecret request. Field values are turned into Buffers here, the one place
 * a plaintext string is unavoidable (protobuf decodes `string` fields to JS strings).
 */
export function parsePutSecret(request: {
  secretId: string;
  provider: string;
  label: string;
  fields: Readonly<Record<string, string>>;
  grant?: readonly string[];
}): PutSecretInput {
  const secretId = request.secretId === "" ? undefined : parseSecretId(request.secretId);
  const provider = parseProviderId(request.provider);
  const label = request.label === "" && secretId !== undefined ? undefined : parseLabel(request.label);
  // Before any field value becomes a Buffer: a refused grant leaves nothing to zero.
  const grant =
    request.grant === undefined || request.grant.length === 0 ? undefined : parseGrant(request.grant);
  const names = Object.keys(request.fields);
  if (names.length === 0) throw invalidArgument("fields must hold at least one credential field");
  if (names.length > SECRET_LIMITS.maxFields)
    throw invalidArgument(`at most ${SECRET_LIMITS.maxFields} fields`);
  const fields = new Map<string, Buffer>();
  for (const name of names) {
    if (!FIELD_NAME.test(name)) {
      throw invalidArgument("field names must be 1-32 characters of a-z, 0-9 or '_', starting with a letter");
    }
    const value = request.fields[name] ?? "";
    const bytes = Buffer.from(value, "utf8");
    if (bytes.length === 0 || bytes.length > SECRET_LIMITS.maxFieldValueBytes) {
      // Name the field, never the value.
      throw invalidArgument(`field ${name} must be 1-${SECRET_LIMITS.maxFieldValueBytes} bytes`);
    }
    fields.set(name, bytes);
  }
  return { secretId, provider, label, fields, ...(grant === undefined ? {} : { grant }) };
}
