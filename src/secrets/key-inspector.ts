import { BrokerError, isBrokerError } from "../errors.js";
import type { Logger } from "../log/logger.js";
import { evaluateInspection, inspectionNeedsRequest } from "../outbound/inspection-recipe.js";
import type { OutboundClient } from "../outbound/outbound-client.js";
import type { ProviderRegistry } from "../outbound/provider-registry.js";
import type { StoredInspection } from "../store/secrets.repository.js";

/** An inspection's result: what is stored and shown, plus the user-facing messages of any refusal. */
export interface KeyInspection extends StoredInspection {
  readonly messages: readonly string[];
}

/** Inspects a key with its provider's recipe (providers.json `inspection`). */
export interface KeyInspector {
  inspect(
    request: {
      readonly providerId: string;
      /** Keys a nonce-signing provider's sequence; never sent. */
      readonly secretId: string;
      readonly fields: ReadonlyMap<string, Buffer>;
      readonly requestId?: string | undefined;
    },
    signal: AbortSignal,
  ): Promise<KeyInspection>;
}

const NOT_INSPECTED: KeyInspection = Object.freeze({
  verdict: "none",
  permissions: [],
  dangerous: [],
  checkedAt: null,
  messages: [],
});

// Failures of the exchange itself: the provider could not answer now, so the user may retry.
const RETRYABLE = new Set(["unavailable", "deadline_exceeded", "resource_exhausted"]);

/**
 * The request goes through the outbound client like any proxied call (egress guard, auth
 * injection, scrubbing): the key leaves the broker only for its own provider. `relaxed` names
 * the providers whose dangerous permissions are recorded and warned about instead of refused.
 */
export function createKeyInspector(deps: {
  registry: Pick<ProviderRegistry, "get">;
  outbound: Pick<OutboundClient, "call">;
  relaxed: ReadonlySet<string>;
  logger: Logger;
  now?: () => Date;
}): KeyInspector {
  const now = deps.now ?? (() => new Date());
  const logger = deps.logger.child({ component: "key-inspection" });
  return {
    async inspect({ providerId, secretId, fields, requestId }, signal) {
      const recipe = deps.registry.get(providerId)?.definition.inspection;
      if (recipe === undefined) return NOT_INSPECTED;
      let answer: Awaited<ReturnType<OutboundClient["call"]>> | undefined;
      if (inspectionNeedsRequest(recipe) && recipe.method !== undefined && recipe.path !== undefined) {
        try {
          answer = await deps.outbound.call(
            {
              providerId,
              secretId,
              fields,
              method: recipe.method,
              path: recipe.path,
              query: (recipe.query ?? []).map(({ name, value }) => [name, value] as const),
              headers: [],
              body: new Uint8Array(0),
              ...(requestId === undefined ? {} : { requestId }),
            },
            signal,
          );
        } catch (err) {
          if (signal.aborted || !isBrokerError(err) || !RETRYABLE.has(err.code)) throw err;
          throw new BrokerError(
            "unavailable",
            `${providerId} could not be reached to inspect the key; nothing was stored, try again`,
            { cause: err },
          );
        }
      }
      const findings = evaluateInspection(recipe, fields, answer);
      const dangerous = findings.dangerous.map((d) => d.permission);
      const verdict = dangerous.length === 0 ? "ok" : deps.relaxed.has(providerId) ? "warned" : "refused";
      if (verdict === "warned") {
        // Names of permissions only: never the key, the user or the answer.
        logger.warn(
          { provider: providerId, dangerous, requestId },
          "key stored with dangerous permissions (provider relaxed by KEYBROKER_INSPECTION_RELAX)",
        );
      }
      return {
        verdict,
        permissions: findings.permissions,
        dangerous,
        checkedAt: now(),
        messages: findings.dangerous.map((d) => d.message),
      };
    },
  };
}
