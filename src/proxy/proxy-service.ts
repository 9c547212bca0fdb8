import type { UserIdentity } from "../auth/identity.js";
import type { ConnectionRefresher } from "../oauth/connection-refresher.js";
import type {
  OutboundClient,
  OutboundResponse,
  OutboundStreamResponse,
} from "../outbound/outbound-client.js";
import type { OperationClass } from "../policy/operation-class.js";
import { checkOperation } from "../policy/operation-grant.js";
import type { OperationPolicy } from "../policy/operation-policy.js";
import type { OpenedSecret, SealedSecret, SecretService } from "../secrets/secret-service.js";
import type { CallRateLimiter } from "./call-rate-limiter.js";
import type { ConcurrencyLimit } from "./concurrency-limit.js";
import type { ProxyCallInput } from "./proxy-input.js";
import type { RateLimitPolicy } from "./rate-limit-policy.js";

/** The upstream's answer, and which provider the secret was sent to (for the audit trail). */
export type ProxiedResponse = OutboundResponse & { readonly provider: string };
export type ProxiedStreamResponse = OutboundStreamResponse & { readonly provider: string };

/** The RPC this proxied call belongs to: its cancellation, and its id for log correlation. */
export interface ProxyCallScope {
  readonly signal: AbortSignal;
  readonly requestId: string;
  /** The authenticated caller key, whose concurrent calls are bounded too (L8). */
  readonly callerKeyId: string;
  /** Its scopes: which operation classes it may use (SPEC I10). */
  readonly callerScopes: ReadonlySet<string>;
}

/** A proxied call's secret, still sealed, and what the operation policy found (nothing decrypted). */
export interface PlannedProxyCall {
  readonly sealed: SealedSecret;
  /** The provider the secret's row names (bound by its head, verified on unseal). */
  readonly provider: string;
  /** The endpoint's operation class; undefined when the provider's rules name none. */
  readonly operationClass: OperationClass | undefined;
  /** The secret's grant, as its row states it (bound by its head, verified on unseal). */
  readonly grant: readonly OperationClass[];
}

export interface ProxyService {
  /**
   * Classifies the call against the secret it names, still sealed, as the `started` row's own
   * statement read it (`found`: undefined when the user has no such secret → NOT_FOUND).
   */
  plan(user: UserIdentity, input: ProxyCallInput, found: SealedSecret | undefined): Promise<PlannedProxyCall>;
  /**
   * Checks the call's class against the caller's scopes and the secret's grant (permission_denied
   * before anything is unwrapped or decrypted, SPEC I10), then unseals the secret and makes the
   * call; the caller has audited its start.
   */
  call(
    user: UserIdentity,
    input: ProxyCallInput,
    planned: PlannedProxyCall,
    call: ProxyCallScope,
  ): Promise<ProxiedResponse>;
  callStream(
    user: UserIdentity,
    input: ProxyCallInput,
    planned: PlannedProxyCall,
    call: ProxyCallScope,
  ): Promise<ProxiedStreamResponse>;
}

/**
 * Uses one of the user's secrets against its provider. The provider is the one the secret
 * was stored for, read from the user's own row: the caller names a secret, never a provider
 * or a host, so a key stored for A can never be sent to B (C23, SPEC I2).
 */
export function createProxyService(deps: {
  secrets: Pick<SecretService, "found" | "unseal">;
  outbound: Pick<OutboundClient, "call" | "callStream">;
  /** Operation classes and grants (SPEC I10): a few pattern matches, no query. */
  operations: OperationPolicy;
  /** Records that a secret was used (best effort: never fails the call). */
  markUsed?: (secretId: string) => void;
  /** In-flight bounds per secret and per caller key, taken before anything is decrypted (L8). */
  limits?: { readonly perSecret: ConcurrencyLimit; readonly perCaller: ConcurrencyLimit };
  /** Calls per window per secret and per caller key, across replicas (issue 13 item 6). */
  rates?: { readonly policy: RateLimitPolicy; readonly limiter: CallRateLimiter };
  /** Refreshes an OAuth connection's expiring access token before it is used (issue 15 item 4). */
  connections?: Pick<ConnectionRefresher, "fresh">;
}): ProxyService {
  /**
   * A token from every limit that applies to the call's provider and operation class. The provider
   * is the secret's own (from its row; one a writer changed fails the head check at unseal anyway).
   */
  function takeRateTokens(
    provider: string,
    operationClass: OperationClass | undefined,
    secretId: string,
    callerKeyId: string,
    signal: AbortSignal,
  ): Promise<void> | undefined {
    if (deps.rates === undefined) return undefined;
    const buckets = deps.rates.policy.bucketsFor({ provider, operationClass, secretId, callerKeyId });
    return buckets.length === 0 ? undefined : deps.rates.limiter.take(buckets, signal);
  }

  const noSlot = () => undefined;
  /** Both slots or neither: a refusal (or abort) while waiting for the second frees the first. */
  async function acquireSlots(
    secretId: string,
    callerKeyId: string,
    signal: AbortSignal,
  ): Promise<() => void> {
    if (deps.limits === undefined) return noSlot;
    const releaseCaller = await deps.limits.perCaller.acquire(callerKeyId, signal);
    try {
      const releaseSecret = await deps.limits.perSecret.acquire(secretId, signal);
      return () => {
        releaseSecret();
        releaseCaller();
      };
    } catch (err) {
      releaseCaller();
      throw err;
    }
  }

  /**
   * An OAuth connection's version to use: refreshed first if its access token is due (issue 15
   * item 4). Callers test `connection === null` first, so a static API key costs one comparison.
   */
  async function refreshed(user: UserIdentity, sealed: SealedSecret, scope: ProxyCallScope) {
    if (deps.connections === undefined) return sealed;
    return deps.connections.fresh(user, sealed, {
      signal: scope.signal,
      actor: { requestId: scope.requestId, callerKeyId: scope.callerKeyId, userRef: user.userRef },
    });
  }

  const request = (secret: OpenedSecret, input: ProxyCallInput, requestId: string) => ({
    requestId,
    providerId: secret.provider,
    secretId: secret.id,
    fields: secret.fields,
    method: input.method,
    path: input.path,
    query: input.query,
    headers: input.headers,
    body: input.body,
  });

  return {
    async plan(_user, input, found) {
      const sealed = deps.secrets.found(found);
      const { provider, grant } = sealed.secret;
      return { sealed, provider, ...deps.operations.plan(provider, grant, input.method, input.path) };
    },

    async call(user, input, { sealed, provider, operationClass, grant }, scope) {
      const { signal, requestId, callerKeyId, callerScopes } = scope;
      // Before a slot, a key unwrap or a decryption: a refused call costs nothing but its audit rows.
      checkOperation(operationClass, grant, callerScopes);
      // After the operation policy, before a slot or anything is decrypted (issue 13 item 6).
      const limited = takeRateTokens(provider, operationClass, input.secretId, callerKeyId, signal);
      if (limited !== undefined) await limited;
      const release = await acquireSlots(input.secretId, callerKeyId, signal);
      try {
        const use = sealed.secret.connection === null ? sealed : await refreshed(user, sealed, scope);
        const secret = await deps.secrets.unseal(user, use, signal);
        try {
          const response = await deps.outbound.call(request(secret, input, requestId), signal);
          deps.markUsed?.(secret.id);
          return { ...response, provider: secret.provider };
        } finally {
          zero(secret);
        }
      } finally {
        release();
      }
    },

    async callStream(user, input, { sealed, provider, operationClass, grant }, scope) {
      const { signal, requestId, callerKeyId, callerScopes } = scope;
      checkOperation(operationClass, grant, callerScopes);
      // After the operation policy, before a slot or anything is decrypted (issue 13 item 6).
      const limited = takeRateTokens(provider, operationClass, input.secretId, callerKeyId, signal);
      if (limited !== undefined) await limited;
      const release = await acquireSlots(input.secretId, callerKeyId, signal);
      let secret: OpenedSecret;
      let response: OutboundStreamResponse;
      try {
        const use = sealed.secret.connection === null ? sealed : await refreshed(user, sealed, scope);
        secret = await deps.secrets.unseal(user, use, signal);
      } catch (err) {
        release();
        throw err;
      }
      try {
        response = await deps.outbound.callStream(request(secret, input, requestId), signal);
      } catch (err) {
        zero(secret);
        release();
        throw err;
      }
      deps.markUsed?.(secret.id);
      // The scrubber needs the values until the last chunk: zero them, and give the slots back,
      // when the stream ends (a slow stream holds its slot for as long as it runs).
      const opened = secret;
      async function* body(): AsyncIterable<Buffer> {
        try {
          yield* response.body;
        } finally {
          zero(opened);
          release();
        }
      }
      return { provider: secret.provider, status: response.status, headers: response.headers, body: body() };
    },
  };
}

function zero(secret: OpenedSecret): void {
  for (const value of secret.fields.values()) value.fill(0);
}
