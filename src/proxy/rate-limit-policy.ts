import type { Rate, RateLimitsDefinition, ScopedRates } from "../outbound/rate-limit-schema.js";
import type { OperationClass } from "../policy/operation-class.js";
import type { RateLimitBucket } from "./call-rate-limiter.js";

/** One proxied call, as far as its limits care. */
export interface RateLimitedCall {
  /** The provider of the secret's own row, never one the caller names. */
  readonly provider: string;
  /** Undefined when no class names the endpoint (such calls are refused before this anyway). */
  readonly operationClass: OperationClass | undefined;
  readonly secretId: string;
  readonly callerKeyId: string;
}

/** Which counters a call draws from, by provider and operation class. */
export interface RateLimitPolicy {
  /** The buckets `call` takes a token from; empty when no limit applies to it. */
  bucketsFor(call: RateLimitedCall): readonly RateLimitBucket[];
}

interface Template {
  readonly scope: "secret" | "caller";
  /** "*" for a provider-wide limit, else the class name. */
  readonly level: string;
  readonly limit: number;
  readonly windowMs: number;
  readonly tag: "m" | "h";
}

const WINDOWS = [
  ["perMinute", 60_000, "m"],
  ["perHour", 3_600_000, "h"],
] as const;

/**
 * Limits come from the provider's `rateLimits` in the registry: provider-wide ones apply to every
 * call, a class's apply on top of them to calls of that class. `defaults` (the environment) stand
 * in for a provider that declares no provider-wide limit of its own.
 */
export function createRateLimitPolicy(deps: {
  limitsOf(provider: string): RateLimitsDefinition | undefined;
  defaults: ScopedRates;
}): RateLimitPolicy {
  const templates = new Map<string, readonly Template[]>();

  function templatesOf(provider: string, operationClass: OperationClass | undefined): readonly Template[] {
    const cacheKey = `${provider}\n${operationClass ?? ""}`;
    let found = templates.get(cacheKey);
    if (found === undefined) {
      const limits = deps.limitsOf(provider);
      const wide: ScopedRates = {
        perSecret: limits?.perSecret ?? deps.defaults.perSecret,
        perCallerKey: limits?.perCallerKey ?? deps.defaults.perCallerKey,
      };
      const ofClass = operationClass === undefined ? undefined : limits?.classes?.[operationClass];
      found = Object.freeze([
        ...templatesAt("*", wide),
        ...(ofClass === undefined || operationClass === undefined
          ? []
          : templatesAt(operationClass, ofClass)),
      ]);
      templates.set(cacheKey, found);
    }
    return found;
  }

  return {
    bucketsFor(call) {
      const list = templatesOf(call.provider, call.operationClass);
      if (list.length === 0) return list as readonly never[];
      return list.map((t) => ({
        // Secret ids are unique across users and providers; caller keys use many providers.
        key:
          t.scope === "secret"
            ? `s:${call.secretId}:${t.level}:${t.tag}`
            : `c:${call.callerKeyId}:${call.provider}:${t.level}:${t.tag}`,
        limit: t.limit,
        windowMs: t.windowMs,
        what: t.scope === "secret" ? "this secret" : "this caller key",
      }));
    },
  };
}

function templatesAt(level: string, rates: ScopedRates): Template[] {
  return [...windowsOf("secret", level, rates.perSecret), ...windowsOf("caller", level, rates.perCallerKey)];
}

function windowsOf(scope: Template["scope"], level: string, rate: Rate | undefined): Template[] {
  if (rate === undefined) return [];
  const out: Template[] = [];
  for (const [field, windowMs, tag] of WINDOWS) {
    const limit = rate[field];
    if (limit !== undefined) out.push({ scope, level, limit, windowMs, tag });
  }
  return out;
}
