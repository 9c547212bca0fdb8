import { BrokerError } from "../errors.js";
import { isDangerousClass, isOperationClass, type OperationClass } from "./operation-class.js";

/** At most this many classes in a grant (there are only six). */
export const MAX_GRANT_CLASSES = 16;

/**
 * A grant in its one stored and MAC'd form: known classes only, each once, sorted. Unknown
 * names are the caller's mistake (invalid_argument), never silently dropped.
 */
export function parseGrant(classes: readonly string[]): OperationClass[] {
  if (classes.length > MAX_GRANT_CLASSES) {
    throw new BrokerError("invalid_argument", `a grant names at most ${MAX_GRANT_CLASSES} classes`);
  }
  const unknown = classes.filter((c) => !isOperationClass(c));
  if (unknown.length > 0) {
    // Only well-formed names are echoed: the value came from the caller.
    const shown = unknown.filter((c) => /^[a-z_]{1,32}$/.test(c));
    throw new BrokerError(
      "invalid_argument",
      `unknown operation class${shown.length > 0 ? `(es): ${shown.join(", ")}` : ""}`,
    );
  }
  return normalizeGrant(classes as readonly OperationClass[]);
}

/** Sorted and without repeats: the form stored in `secrets.operation_grant` and bound by the head. */
export function normalizeGrant(classes: readonly OperationClass[]): OperationClass[] {
  return [...new Set(classes)].sort();
}

/** How a new grant compares with the one it replaces, for the audit trail. */
export type GrantChange = "new" | "same" | "narrowed" | "widened";

export function compareGrants(
  previous: readonly OperationClass[] | undefined,
  next: readonly OperationClass[],
): GrantChange {
  if (previous === undefined) return "new";
  const before = new Set(previous);
  if (next.some((c) => !before.has(c))) return "widened";
  return next.length < before.size ? "narrowed" : "same";
}

/** The grant as an audit detail value, e.g. "read,trade" ("none" when empty). */
export function grantLabel(grant: readonly OperationClass[]): string {
  return grant.length === 0 ? "none" : grant.join(",");
}

/** The caller scope that allows one class explicitly, e.g. `proxy:trade`. */
export type ClassScope = `proxy:${OperationClass}`;

/**
 * Whether a caller key's scopes allow `operationClass`: its own `proxy:<class>` scope, or
 * `proxy:call` for a class that is not dangerous (so keys issued before classes existed keep
 * working for everything but transfers, credentials and webhooks).
 */
export function callerAllowsClass(scopes: ReadonlySet<string>, operationClass: OperationClass): boolean {
  return (
    scopes.has(`proxy:${operationClass}`) || (scopes.has("proxy:call") && !isDangerousClass(operationClass))
  );
}

/**
 * The policy check of one proxied call, run before anything is unwrapped or decrypted. In order:
 * an endpoint no rule classifies; a class the caller key's scopes do not allow (the caller's own
 * problem, checked first so it learns nothing about the secret's grant); a class the secret's
 * grant does not include. Each is permission_denied with a machine reason.
 */
export function checkOperation(
  operationClass: OperationClass | undefined,
  grant: readonly OperationClass[],
  callerScopes: ReadonlySet<string>,
): OperationClass {
  if (operationClass === undefined) {
    throw new BrokerError("permission_denied", "this endpoint is not classified for the secret's provider", {
      reason: "operation_unclassified",
    });
  }
  if (!callerAllowsClass(callerScopes, operationClass)) {
    throw new BrokerError("permission_denied", `caller key lacks the proxy:${operationClass} scope`, {
      reason: "caller_key_scope_missing",
    });
  }
  if (!grant.includes(operationClass)) {
    throw new BrokerError(
      "permission_denied",
      `the secret is not granted for ${operationClass} operations; its owner must widen the grant with PutSecret`,
      { reason: "operation_not_granted" },
    );
  }
  return operationClass;
}
