import { compilePathPattern, type PathPattern } from "../outbound/path-guard.js";

/**
 * What a proxied call may do with a stored key (SPEC I10). Every endpoint a provider allows is
 * named by exactly one class in the registry (`operations`, first match wins); a call no class
 * names is refused. The list is fixed here, not in the registry, so a registry file cannot
 * invent a class that escapes the dangerous set.
 */
export const OPERATION_CLASSES = ["read", "write", "trade", "transfer", "credentials", "webhooks"] as const;
export type OperationClass = (typeof OPERATION_CLASSES)[number];

/**
 * Classes whose misuse outlives the attack: money leaving the account (withdrawals, payouts,
 * transfers), new credentials or access for someone else, and webhooks that send the account's
 * events elsewhere. A provider's default grant never includes one, and `proxy:call` never
 * implies one: each needs the user's explicit grant AND the caller key's explicit scope.
 */
export const DANGEROUS_CLASSES: ReadonlySet<OperationClass> = new Set([
  "transfer",
  "credentials",
  "webhooks",
]);

export function isOperationClass(value: string): value is OperationClass {
  return (OPERATION_CLASSES as readonly string[]).includes(value);
}

export function isDangerousClass(value: OperationClass): boolean {
  return DANGEROUS_CLASSES.has(value);
}

/** One `operations` entry of a provider definition, as written in the registry. */
export interface OperationRuleDefinition {
  readonly class: OperationClass;
  readonly methods: readonly string[];
  readonly paths: readonly string[];
}

/** A compiled `operations` entry: patterns are matched against the classification form of a path. */
export interface OperationRule {
  readonly operationClass: OperationClass;
  readonly methods: ReadonlySet<string>;
  readonly patterns: readonly PathPattern[];
}

/** Compiles a provider's rules once, at registry load (patterns must already have been checked). */
export function compileOperationRules(rules: readonly OperationRuleDefinition[]): readonly OperationRule[] {
  return Object.freeze(
    rules.map((rule) =>
      Object.freeze({
        operationClass: rule.class,
        methods: new Set(rule.methods),
        patterns: Object.freeze(rule.paths.map((p) => compilePathPattern(p.toLowerCase()))),
      }),
    ),
  );
}

/** Anything carrying compiled rules: a registry `Provider` is one. */
export interface ClassifiedProvider {
  readonly operations: readonly OperationRule[];
}

/**
 * The class of `method path` under the provider's rules, or undefined when no rule names it
 * (the caller must then refuse the call). `path` is the caller's path relative to the base URL.
 *
 * Rules are matched against the path as a lenient upstream might read it, not as sent: each
 * segment percent-decoded, cut at `;` (matrix parameters, which Java servers strip), lower-cased,
 * and a trailing slash dropped. So `/SAPI/v1/capital/withdr%61w/apply/;x` still classifies as
 * Binance's withdrawal; a spelling can only make a call classify as more, never less, dangerous
 * than the endpoint the upstream will serve. Cost: one split and a few pattern walks per call.
 */
export function classifyOperation(
  provider: ClassifiedProvider,
  method: string,
  path: string,
): OperationClass | undefined {
  const key = classificationPath(path);
  if (key === undefined) return undefined;
  for (const rule of provider.operations) {
    if (!rule.methods.has(method)) continue;
    for (const pattern of rule.patterns) {
      if (pattern.matches(key)) return rule.operationClass;
    }
  }
  return undefined;
}

/** The path as rules see it (see classifyOperation); undefined if a segment does not decode. */
export function classificationPath(path: string): string | undefined {
  if (!path.startsWith("/")) return undefined;
  const segments = path.slice(1).split("/");
  const out: string[] = [];
  for (const raw of segments) {
    let segment: string;
    try {
      segment = raw.includes("%") ? decodeURIComponent(raw) : raw;
    } catch {
      return undefined;
    }
    // A decoded "/" would change the segment structure the rules were written against.
    if (segment.includes("/")) return undefined;
    const cut = segment.indexOf(";");
    out.push((cut === -1 ? segment : segment.slice(0, cut)).toLowerCase());
  }
  if (out.length > 1 && out[out.length - 1] === "") out.pop();
  return `/${out.join("/")}`;
}
