import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import type { z } from "zod";
import { BrokerError } from "../errors.js";
import {
  classifyOperation,
  compileOperationRules,
  isDangerousClass,
  type OperationRule,
} from "../policy/operation-class.js";
import { authSchemeProblems, credentialFields, type ReservedNames, reservedNames } from "./auth-schemes.js";
import { inspectionProblems } from "./inspection-recipe.js";
import { oauthProblems } from "./oauth-registry-checks.js";
import { checkCallerPath, compilePathPattern, type PathPattern, pathPatternProblem } from "./path-guard.js";
import { type ProviderDefinition, providerSchema, registryFileSchema } from "./provider-schema.js";
import { compileRedactionRules, type ResponseRedaction } from "./redaction-rules.js";

/** A provider definition plus what the client derives from it once, at start-up. */
export interface Provider {
  readonly definition: ProviderDefinition;
  readonly baseUrl: URL;
  readonly patterns: readonly PathPattern[];
  /** Headers, query parameters and body fields the auth scheme sets: computed once, read per call. */
  readonly reserved: ReservedNames;
  /** Credential fields to redact from answers (redaction-rules.ts); undefined when none. */
  readonly redaction: ResponseRedaction | undefined;
  /** The operation class rules, compiled once (see policy/operation-class.ts). */
  readonly operations: readonly OperationRule[];
}

/** The validated, frozen set of providers the broker may talk to. */
export interface ProviderRegistry {
  get(id: string): Provider | undefined;
  ids(): readonly string[];
}

/** A provider's request body limit when its definition sets none. */
export const DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024;

/** The largest request body any provider accepts: the transports must let it through (F3). */
export function largestRequestBodyBytes(registry: ProviderRegistry): number {
  let largest = 0;
  for (const id of registry.ids()) {
    largest = Math.max(largest, registry.get(id)?.definition.maxRequestBytes ?? DEFAULT_MAX_REQUEST_BYTES);
  }
  return largest;
}

export interface RegistryOptions {
  /** Production refuses `allowLoopback` and any non-https base URL. */
  readonly production: boolean;
}

export async function loadProviderRegistry(
  path: string,
  options: RegistryOptions,
): Promise<ProviderRegistry> {
  let raw: unknown;
  try {
    raw = JSON.parse(await readFile(path, "utf8"));
  } catch (err) {
    throw new BrokerError("failed_precondition", `provider registry ${path} cannot be read as JSON`, {
      cause: err,
    });
  }
  return parseProviderRegistry(raw, options);
}

/**
 * Validates a registry document and lists every problem at once (a start-up that fails one
 * problem at a time wastes an operator's afternoon).
 */
export function parseProviderRegistry(raw: unknown, options: RegistryOptions): ProviderRegistry {
  const problems: string[] = [];
  const file = registryFileSchema.safeParse(raw);
  if (!file.success) {
    throw registryError(formatIssues("registry", file.error.issues));
  }

  const providers = new Map<string, Provider>();
  file.data.providers.forEach((entry, index) => {
    const label =
      typeof entry === "object" && entry !== null && "id" in entry ? String(entry.id) : `#${index}`;
    const parsed = providerSchema.safeParse(entry);
    if (!parsed.success) {
      problems.push(...formatIssues(`providers[${index}] (${label})`, parsed.error.issues));
      return;
    }
    const definition = parsed.data;
    const own = checkProvider(definition, options).map((p) => `providers[${index}] (${label}): ${p}`);
    problems.push(...own);
    if (providers.has(definition.id)) problems.push(`providers[${index}]: duplicate id "${definition.id}"`);
    if (own.length === 0) {
      providers.set(
        definition.id,
        Object.freeze({
          definition: Object.freeze(definition),
          baseUrl: new URL(definition.baseUrl),
          patterns: Object.freeze(definition.pathPatterns.map(compilePathPattern)),
          reserved: reservedNames(definition.auth),
          redaction: compileRedactionRules(definition.redactResponseFields),
          operations: compileOperationRules(definition.operations),
        }),
      );
    }
  });

  if (problems.length > 0) throw registryError(problems);
  const ids = Object.freeze([...providers.keys()]);
  return Object.freeze({ get: (id: string) => providers.get(id), ids: () => ids });
}

function registryError(problems: readonly string[]): BrokerError {
  return new BrokerError("failed_precondition", `provider registry is invalid:\n- ${problems.join("\n- ")}`);
}

function formatIssues(prefix: string, issues: readonly z.core.$ZodIssue[]): string[] {
  return issues.map(
    (issue) => `${prefix}${issue.path.length > 0 ? `.${issue.path.join(".")}` : ""}: ${issue.message}`,
  );
}

/** The hostname exactly as the WHATWG parser would spell it, or undefined if it has none. */
function canonicalHost(host: string): string | undefined {
  try {
    const url = new URL(`https://${host}/`);
    return url.port === "" && url.pathname === "/" && url.username === "" ? url.hostname : undefined;
  } catch {
    return undefined;
  }
}

function checkProvider(p: ProviderDefinition, { production }: RegistryOptions): string[] {
  const problems: string[] = [];

  let base: URL | undefined;
  try {
    base = new URL(p.baseUrl);
  } catch {
    problems.push("baseUrl is not a URL");
  }
  if (base !== undefined) {
    if (base.protocol !== "https:" && (production || !p.allowLoopback)) {
      problems.push("baseUrl must be https (plain http only for allowLoopback providers outside production)");
    }
    if (base.protocol !== "https:" && base.protocol !== "http:") problems.push("baseUrl must be http(s)");
    if (base.username !== "" || base.password !== "") problems.push("baseUrl must not carry credentials");
    if (base.search !== "" || base.hash !== "" || p.baseUrl.includes("?") || p.baseUrl.includes("#")) {
      problems.push("baseUrl must not have a query or fragment");
    }
    // What the operator wrote must be what the parser reads ("https://h" parses as "https://h/").
    if (base.href !== p.baseUrl && base.href !== `${p.baseUrl}/`) {
      problems.push(`baseUrl must be written canonically (${base.href})`);
    }
    if (!p.allowedHosts.includes(base.hostname)) {
      problems.push(`baseUrl host "${base.hostname}" is not in allowedHosts`);
    }
  }

  for (const host of p.allowedHosts) {
    // Exact, canonical spellings only: a trailing dot, upper case or a Unicode look-alike in the
    // registry would make "exact match" mean something other than what the operator read.
    if (host.endsWith(".") || canonicalHost(host) !== host) {
      problems.push(
        `allowedHosts entry "${host}" must be a canonical lower-case hostname (punycode, no port)`,
      );
    }
    if (production && isIP(host.replace(/^\[|\]$/g, "")) !== 0) {
      problems.push(`allowedHosts entry "${host}" is an IP literal; production providers use hostnames`);
    }
  }

  if (p.allowLoopback && production) problems.push("allowLoopback is for development and tests only");

  for (const pattern of p.pathPatterns) {
    const problem = pathPatternProblem(pattern);
    if (problem !== undefined) problems.push(`pathPatterns "${pattern}": ${problem}`);
  }

  for (const [i, rule] of (p.redactResponseFields ?? []).entries()) {
    for (const pattern of rule.paths ?? []) {
      const problem = pathPatternProblem(pattern);
      if (problem !== undefined) problems.push(`redactResponseFields[${i}].paths "${pattern}": ${problem}`);
    }
  }
  if (p.inspection !== undefined) {
    problems.push(...inspectionProblems(p.inspection, p.requiredFields));
    const path = p.inspection.path;
    if (path !== undefined) {
      try {
        checkCallerPath(path);
        if (!p.pathPatterns.some((pattern) => compilePathPattern(pattern).matches(path))) {
          problems.push(`inspection.path "${path}" is not allowed by pathPatterns`);
        }
      } catch {
        problems.push(`inspection.path "${path}" is not a valid request path`);
      }
    }
    if (p.inspection.method !== undefined && !p.allowedMethods.includes(p.inspection.method)) {
      problems.push(`inspection.method ${p.inspection.method} is not in allowedMethods`);
    }
    // The inspection request bypasses grants (the key is not stored yet): it must be an endpoint
    // the provider's own rules call harmless.
    if (p.inspection.method !== undefined && path !== undefined) {
      let cls: ReturnType<typeof classifyOperation>;
      try {
        cls = classifyOperation(
          { operations: compileOperationRules(p.operations) },
          p.inspection.method,
          path,
        );
      } catch {
        cls = undefined; // a bad operations pattern is reported on its own above
      }
      if (cls === undefined || isDangerousClass(cls)) {
        problems.push(`inspection request must be classified by operations as a non-dangerous class`);
      }
    }
  }
  for (const [i, rule] of p.operations.entries()) {
    for (const pattern of rule.paths) {
      const problem = pathPatternProblem(pattern);
      if (problem !== undefined) problems.push(`operations[${i}].paths "${pattern}": ${problem}`);
    }
  }
  // SPEC I10: a key stored without an explicit grant can never move funds out, mint credentials
  // or redirect events. The dangerous set is fixed in code, not in this file.
  const dangerous = p.defaultGrant.filter(isDangerousClass);
  if (dangerous.length > 0) {
    problems.push(`defaultGrant must not include a dangerous class (${dangerous.join(", ")})`);
  }

  for (const field of credentialFields(p.auth)) {
    if (!p.requiredFields.includes(field))
      problems.push(`auth uses field "${field}" which is not in requiredFields`);
  }

  problems.push(...authSchemeProblems(p));
  problems.push(...oauthProblems(p, production));
  return problems;
}
