import { checkCallerPath } from "../outbound/path-guard.js";
import type { ProviderRegistry } from "../outbound/provider-registry.js";
import { classifyOperation, isOperationClass, type OperationClass } from "./operation-class.js";
import { normalizeGrant } from "./operation-grant.js";

/** What the policy knows of a proxied call before anything is decrypted. */
export interface OperationPlan {
  /** The class the provider's rules give the endpoint; undefined when none does (refused). */
  readonly operationClass: OperationClass | undefined;
  /** The secret's grant: its stored one, or its provider's default for a secret stored before grants. */
  readonly grant: readonly OperationClass[];
}

export interface OperationPolicy {
  /**
   * Classifies `method path` for the secret's provider and reads the secret's grant, from the
   * sealed row alone (no key, no query). The row is not yet verified: its head, which binds
   * both provider and grant, is checked when the secret is unsealed, so a widened grant gets as
   * far as data_loss and never as far as the upstream. Throws invalid_argument for a path the
   * egress engine would refuse anyway, so a malformed path is never reported as unclassified.
   */
  plan(provider: string, storedGrant: readonly string[] | null, method: string, path: string): OperationPlan;
}

export function createOperationPolicy(registry: Pick<ProviderRegistry, "get">): OperationPolicy {
  return {
    plan(providerId, storedGrant, method, path) {
      checkCallerPath(path);
      const provider = registry.get(providerId);
      if (provider === undefined) return { operationClass: undefined, grant: [] };
      const grant =
        storedGrant === null
          ? normalizeGrant(provider.definition.defaultGrant)
          : storedGrant.filter(isOperationClass);
      return { operationClass: classifyOperation(provider, method, path), grant };
    },
  };
}
