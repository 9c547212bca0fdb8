import type { UserIdentity } from "../auth/identity.js";
import type {
  OutboundClient,
  OutboundResponse,
  OutboundStreamResponse,
} from "../outbound/outbound-client.js";
import type { OpenedSecret, SealedSecret, SecretService } from "../secrets/secret-service.js";
import type { ProxyCallInput } from "./proxy-input.js";

/** The upstream's answer, and which provider the secret was sent to (for the audit trail). */
export type ProxiedResponse = OutboundResponse & { readonly provider: string };
export type ProxiedStreamResponse = OutboundStreamResponse & { readonly provider: string };

/** The RPC this proxied call belongs to: its cancellation, and its id for log correlation. */
export interface ProxyCallScope {
  readonly signal: AbortSignal;
  readonly requestId: string;
}

export interface ProxyService {
  /** Reads the secret the call names, still sealed: it may run before the `started` audit row. */
  fetch(user: UserIdentity, input: ProxyCallInput): Promise<SealedSecret>;
  /** Unseals the fetched secret and makes the call; the caller has audited its start. */
  call(
    user: UserIdentity,
    input: ProxyCallInput,
    sealed: SealedSecret,
    call: ProxyCallScope,
  ): Promise<ProxiedResponse>;
  callStream(
    user: UserIdentity,
    input: ProxyCallInput,
    sealed: SealedSecret,
    call: ProxyCallScope,
  ): Promise<ProxiedStreamResponse>;
}

/**
 * Uses one of the user's secrets against its provider. The provider is the one the secret
 * was stored for, read from the user's own row: the caller names a secret, never a provider
 * or a host, so a key stored for A can never be sent to B (C23, SPEC I2).
 */
export function createProxyService(deps: {
  secrets: Pick<SecretService, "fetch" | "unseal">;
  outbound: Pick<OutboundClient, "call" | "callStream">;
  /** Records that a secret was used (best effort: never fails the call). */
  markUsed?: (secretId: string) => void;
}): ProxyService {
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
    fetch: (user, input) => deps.secrets.fetch(user, input.secretId),

    async call(user, input, sealed, { signal, requestId }) {
      const secret = await deps.secrets.unseal(user, sealed, signal);
      try {
        const response = await deps.outbound.call(request(secret, input, requestId), signal);
        deps.markUsed?.(secret.id);
        return { ...response, provider: secret.provider };
      } finally {
        zero(secret);
      }
    },

    async callStream(user, input, sealed, { signal, requestId }) {
      const secret = await deps.secrets.unseal(user, sealed, signal);
      let response: OutboundStreamResponse;
      try {
        response = await deps.outbound.callStream(request(secret, input, requestId), signal);
      } catch (err) {
        zero(secret);
        throw err;
      }
      deps.markUsed?.(secret.id);
      // The scrubber needs the values until the last chunk: zero them when the stream ends.
      async function* body(): AsyncIterable<Buffer> {
        try {
          yield* response.body;
        } finally {
          zero(secret);
        }
      }
      return { provider: secret.provider, status: response.status, headers: response.headers, body: body() };
    },
  };
}

function zero(secret: OpenedSecret): void {
  for (const value of secret.fields.values()) value.fill(0);
}
