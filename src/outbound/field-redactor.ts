import { setImmediate as yieldToEventLoop } from "node:timers/promises";
import { BrokerError } from "../errors.js";
import { createFormFieldRedactor } from "./form-field-redactor.js";
import { createJsonFieldRedactor } from "./json-field-redactor.js";
import type { FieldRedactor } from "./redactor.js";
import { SCRUB_SLICE_BYTES } from "./response-scrubber.js";

export type { FieldRedactor } from "./redactor.js";

/**
 * The redactor for a body of this content type: JSON (`application/json`, `*+json`, and the
 * `text/javascript` Graph once answered with) and form-encoded bodies are rewritten; any other
 * body, or an ambiguous type, passes only if no field name occurs in it at all (fail safe: a
 * credential field the broker cannot parse is never let through).
 */
export function createFieldRedactor(
  fields: ReadonlySet<string>,
  contentType: string | readonly string[] | undefined,
): FieldRedactor {
  const media =
    typeof contentType === "string" ? (contentType.split(";")[0] ?? "").trim().toLowerCase() : undefined;
  if (
    media === "application/json" ||
    media === "text/json" ||
    media === "text/javascript" ||
    media === "application/javascript" ||
    media?.endsWith("+json")
  ) {
    return createJsonFieldRedactor(fields);
  }
  if (media === "application/x-www-form-urlencoded") return createFormFieldRedactor(fields);
  return createFieldNameGuard(fields);
}

/** The whole body through `redactor`, a slice at a time with the event loop let run in between (H1). */
export async function redactInSlices(redactor: FieldRedactor, body: Buffer): Promise<Buffer> {
  if (body.length <= SCRUB_SLICE_BYTES) {
    const out = redactor.push(body);
    const tail = redactor.flush();
    return tail.length === 0 ? out : Buffer.concat([out, tail]);
  }
  const parts: Buffer[] = [];
  for (let at = 0; at < body.length; at += SCRUB_SLICE_BYTES) {
    if (at > 0) await yieldToEventLoop();
    parts.push(redactor.push(body.subarray(at, at + SCRUB_SLICE_BYTES)));
  }
  parts.push(redactor.flush());
  return Buffer.concat(parts);
}

/**
 * For bodies that are neither JSON nor a form: refuses the body if any field name occurs in it
 * (ASCII case-insensitive), including across chunk boundaries. A name is found when its last
 * byte arrives, before the chunk holding it (and the value after it) is released.
 */
function createFieldNameGuard(fields: ReadonlySet<string>): FieldRedactor {
  const names = [...fields];
  const keep = Math.max(0, ...names.map((n) => n.length)) - 1;
  let tail = "";
  return {
    redactions: 0,
    push(chunk) {
      const text = tail + chunk.toString("latin1").toLowerCase();
      for (const name of names) {
        if (text.includes(name)) {
          throw new BrokerError(
            "unavailable",
            "upstream answer names a credential field in a format the broker cannot redact",
          );
        }
      }
      tail = keep > 0 ? text.slice(-keep) : "";
      return chunk;
    },
    flush: () => Buffer.alloc(0),
  };
}
