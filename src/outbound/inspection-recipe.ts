import { z } from "zod";
import { BrokerError } from "../errors.js";

// A provider's key inspection recipe (issue 13 item 5): an optional request made with the new
// key, and rules that read permissions from its answer or from the key's own fields.

const permissionName = z
  .string()
  .regex(/^[a-z][a-z0-9:_-]{0,63}$/, "permission names are lower-case letters, digits, ':', '_' and '-'");

// RFC 6901 JSON pointer, e.g. "/enableWithdrawals".
const jsonPointer = z
  .string()
  .regex(/^(\/[^/]{1,128}){1,8}$/, "must be a JSON pointer such as /enableWithdrawals");

const ruleCommon = {
  permission: permissionName,
  /** A dangerous permission refuses the key at PutSecret unless the provider is relaxed. */
  dangerous: z.optional(z.boolean()),
  /** Shown to the user when the key is refused: what the key can do and what to create instead. */
  message: z.optional(z.string().min(1).max(200)),
};

export const inspectionRuleSchema = z.discriminatedUnion("from", [
  /** The answer's JSON value at `pointer` equals `equals`. */
  z.strictObject({
    from: z.literal("json"),
    pointer: jsonPointer,
    equals: z.union([z.boolean(), z.number(), z.string().max(256)]),
    ...ruleCommon,
  }),
  /** The answer header `name`, a comma-separated list, holds the item `contains`. */
  z.strictObject({
    from: z.literal("header"),
    name: z
      .string()
      .max(128)
      .regex(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/),
    contains: z.string().min(1).max(128),
    ...ruleCommon,
  }),
  /** The stored field starts with `prefix` (no request needed, e.g. Stripe's `sk_` vs `rk_`). */
  z.strictObject({
    from: z.literal("field-prefix"),
    field: z.string().regex(/^[a-z][a-z0-9_]{0,63}$/),
    prefix: z.string().min(1).max(64),
    ...ruleCommon,
  }),
]);

export const inspectionSchema = z.strictObject({
  /** The request made with the new key; absent when every rule reads the fields alone. */
  method: z.optional(z.enum(["GET", "POST"])),
  path: z.optional(z.string().min(1).max(512)),
  query: z.optional(
    z
      .array(
        z.strictObject({
          name: z
            .string()
            .max(128)
            .regex(/^[A-Za-z0-9_.\-~]+$/),
          value: z.string().max(256),
        }),
      )
      .max(8),
  ),
  rules: z.array(inspectionRuleSchema).min(1).max(32),
});

export type InspectionRecipe = z.infer<typeof inspectionSchema>;
export type InspectionRule = z.infer<typeof inspectionRuleSchema>;

/** Whether the recipe sends a request (any rule reads an answer). */
export function inspectionNeedsRequest(recipe: InspectionRecipe): boolean {
  return recipe.rules.some((r) => r.from !== "field-prefix");
}

/** Cross-field problems, reported with the rest of the registry's (provider-registry.ts). */
export function inspectionProblems(recipe: InspectionRecipe, requiredFields: readonly string[]): string[] {
  const problems: string[] = [];
  if (inspectionNeedsRequest(recipe) && (recipe.method === undefined || recipe.path === undefined)) {
    problems.push("inspection: json and header rules need a method and a path");
  }
  for (const [i, rule] of recipe.rules.entries()) {
    if (rule.dangerous === true && rule.message === undefined) {
      problems.push(`inspection.rules[${i}]: a dangerous rule needs a message telling the user what to do`);
    }
    if (rule.from === "field-prefix" && !requiredFields.includes(rule.field)) {
      problems.push(`inspection.rules[${i}]: field "${rule.field}" is not in requiredFields`);
    }
  }
  return problems;
}

/** An inspection answer, already scrubbed by the outbound client. */
export interface InspectionAnswer {
  readonly status: number;
  readonly headers: ReadonlyArray<readonly [string, string]>;
  readonly body: Buffer;
}

/** What the rules found: every permission, and the dangerous ones with the user's message. */
export interface InspectionFindings {
  readonly permissions: readonly string[];
  readonly dangerous: ReadonlyArray<{ readonly permission: string; readonly message: string }>;
}

// Permission answers are small; a larger one is not what the recipe expects.
const MAX_ANSWER_BYTES = 64 * 1024;

/**
 * Applies the rules. A non-2xx answer is the provider refusing the key (failed_precondition)
 * or being unable to answer now (unavailable: 429 and 5xx, retryable); an answer the rules
 * cannot read is unavailable too, never a silent "no permissions".
 */
export function evaluateInspection(
  recipe: InspectionRecipe,
  fields: ReadonlyMap<string, Buffer>,
  answer: InspectionAnswer | undefined,
): InspectionFindings {
  if (answer !== undefined) checkStatus(answer.status);
  let json: unknown;
  const jsonValue = (): unknown => {
    if (answer === undefined) throw new BrokerError("internal", "internal error");
    if (json === undefined) {
      if (answer.body.length > MAX_ANSWER_BYTES) {
        throw new BrokerError("unavailable", "the provider's answer to the key inspection is too large");
      }
      try {
        json = JSON.parse(answer.body.toString("utf8"));
      } catch (err) {
        throw new BrokerError("unavailable", "the provider's answer to the key inspection is not JSON", {
          cause: err,
        });
      }
    }
    return json;
  };

  const permissions = new Set<string>();
  const dangerous = new Map<string, string>();
  for (const rule of recipe.rules) {
    let holds: boolean;
    if (rule.from === "field-prefix") {
      const value = fields.get(rule.field);
      holds = value?.subarray(0, rule.prefix.length).equals(Buffer.from(rule.prefix)) === true;
    } else if (rule.from === "json") {
      holds = pointerValue(jsonValue(), rule.pointer) === rule.equals;
    } else {
      const wanted = rule.name.toLowerCase();
      holds = (answer?.headers ?? [])
        .filter(([name]) => name.toLowerCase() === wanted)
        .flatMap(([, value]) => value.split(","))
        .some((item) => item.trim() === rule.contains);
    }
    if (!holds) continue;
    permissions.add(rule.permission);
    if (rule.dangerous === true) dangerous.set(rule.permission, rule.message ?? rule.permission);
  }
  return {
    permissions: [...permissions].sort(),
    dangerous: [...dangerous].map(([permission, message]) => ({ permission, message })),
  };
}

function checkStatus(status: number): void {
  if (status >= 200 && status < 300) return;
  if (status === 429 || status >= 500) {
    throw new BrokerError(
      "unavailable",
      `the provider could not inspect the key now (HTTP ${status}); try again later`,
    );
  }
  throw new BrokerError(
    "failed_precondition",
    `the provider refused this key (HTTP ${status}); check the key and its IP restrictions`,
  );
}

function pointerValue(root: unknown, pointer: string): unknown {
  let at: unknown = root;
  for (const raw of pointer.slice(1).split("/")) {
    const token = raw.replaceAll("~1", "/").replaceAll("~0", "~");
    if (typeof at !== "object" || at === null || !Object.hasOwn(at, token)) return undefined;
    at = (at as Record<string, unknown>)[token];
  }
  return at;
}
