/** bytea comes back as Uint8Array from PGlite and Buffer from pg: one view type for the domain. */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Postgres unique_violation, the same code on pg and PGlite (whose error class name is minified). */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { code?: unknown }).code === "23505";
}
