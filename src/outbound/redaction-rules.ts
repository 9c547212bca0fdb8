import { compilePathPattern, type PathPattern } from "./path-guard.js";

/** One `redactResponseFields` entry: these response fields, on these paths (all when absent). */
export interface RedactionRule {
  readonly paths?: readonly string[] | undefined;
  readonly fields: readonly string[];
}

/** A provider's redaction rules, compiled once at start-up. */
export interface ResponseRedaction {
  /** The lower-cased field names to redact in the answer to `path`, or undefined for none. */
  fieldsFor(path: string): ReadonlySet<string> | undefined;
}

/**
 * Compiles the rules. Paths are matched lower-cased and percent-decoded: path patterns elsewhere
 * are exact, but here matching too much only redacts more, while `/ME/%61ccounts` reaching a
 * case-insensitive upstream unredacted would leak. Undefined when there are no rules.
 */
export function compileRedactionRules(
  rules: readonly RedactionRule[] | undefined,
): ResponseRedaction | undefined {
  if (rules === undefined || rules.length === 0) return undefined;
  const compiled = rules.map((rule) => ({
    patterns: rule.paths?.map((p) => compilePathPattern(p.toLowerCase())),
    fields: rule.fields.map((f) => f.toLowerCase()),
  }));
  const everywhere = new Set(compiled.filter((r) => r.patterns === undefined).flatMap((r) => r.fields));
  const scoped = compiled.filter(
    (r): r is { patterns: PathPattern[]; fields: string[] } => r.patterns !== undefined,
  );
  return {
    fieldsFor(path) {
      if (scoped.length === 0) return everywhere.size > 0 ? everywhere : undefined;
      const normalized = normalizePath(path);
      const fields = new Set(everywhere);
      for (const rule of scoped) {
        if (rule.patterns.some((p) => p.matches(normalized))) for (const f of rule.fields) fields.add(f);
      }
      return fields.size > 0 ? fields : undefined;
    },
  };
}

function normalizePath(path: string): string {
  let decoded = path;
  try {
    decoded = decodeURIComponent(path);
  } catch {
    // The path guard refuses malformed escapes before we get here; keep the raw form anyway.
  }
  return decoded.toLowerCase();
}
