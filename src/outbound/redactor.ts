/**
 * Removes credential-bearing fields a provider declares (`redactResponseFields`) from one
 * response body, a chunk at a time: `push` per chunk, `flush` once at the end. Either throws
 * `unavailable` (the body cannot be redacted safely) or returns what may leave the broker.
 */
export interface FieldRedactor {
  push(chunk: Buffer): Buffer;
  flush(): Buffer;
  /** Values replaced so far (a count for metrics and the audit trail; never the values). */
  readonly redactions: number;
}
