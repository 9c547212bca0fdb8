import type { AuditActor, AuditedRunner } from "../audit/audited-operation.js";
import type { UserIdentity } from "../auth/identity.js";
import type { Logger } from "../log/logger.js";
import type { Provider } from "../outbound/provider-registry.js";
import type { SealedSecret, SecretService } from "../secrets/secret-service.js";
import type { OAuthAppStore } from "./oauth-app-store.js";
import type { TokenEndpointClient } from "./token-endpoint-client.js";
import { isTokenEndpointError } from "./token-endpoint-errors.js";

/** DeleteSecret (issue 15 item 5): an OAuth connection's grant is revoked at the provider first. */
export interface SecretDeleter {
  /**
   * Deletes the user's secret; not_found for an absent or another user's secret (SPEC I4). For an
   * OAuth connection whose provider has an RFC 7009 endpoint, the token is revoked there first:
   * best effort — a failure is audited (`secret.revoke`, outcome error) and the delete goes on,
   * since a user who asks to forget a connection must not be kept from it by a provider outage.
   */
  delete(user: UserIdentity, secretId: string, actor: AuditActor): Promise<void>;
}

export interface SecretDeleterDeps {
  readonly secrets: Pick<SecretService, "fetch" | "unseal" | "delete">;
  readonly registry: { get(id: string): Provider | undefined };
  readonly apps: Pick<OAuthAppStore, "get">;
  readonly tokens: Pick<TokenEndpointClient, "revoke">;
  readonly audited: Pick<AuditedRunner, "run">;
  readonly logger: Logger;
  /** The most a revocation may hold up a delete. */
  readonly revokeTimeoutMs?: number;
}

const DEFAULT_REVOKE_TIMEOUT_MS = 10_000;

export function createSecretDeleter(deps: SecretDeleterDeps): SecretDeleter {
  const { secrets, registry, logger } = deps;
  const timeoutMs = deps.revokeTimeoutMs ?? DEFAULT_REVOKE_TIMEOUT_MS;

  async function revokeAtProvider(
    user: UserIdentity,
    sealed: SealedSecret,
    actor: AuditActor,
  ): Promise<void> {
    const { id, provider: providerId } = sealed.secret;
    const provider = registry.get(providerId);
    if (provider?.definition.oauth?.revocationEndpoint === undefined) return;
    try {
      await deps.audited.run(
        actor,
        {
          action: "secret.revoke",
          sensitive: true,
          target: id,
          detail: { provider: providerId },
          resultDetail: (outcome: string) => ({ reason: outcome }),
        },
        () => revoke(user, sealed, provider, AbortSignal.timeout(timeoutMs)),
      );
    } catch (err) {
      // Audited above (or the trail refused the `started` row, and nothing was sent). Only the
      // failure's kind is logged: never the provider's words or a token.
      logger.warn(
        { provider: providerId, secretId: id, failure: isTokenEndpointError(err) ? err.failure : "error" },
        "oauth: could not revoke a deleted connection at the provider; deleting it anyway",
      );
    }
  }

  /**
   * One request: the refresh token where there is one (RFC 7009 §2.1: the provider then also
   * invalidates the access tokens of the grant), else the access token.
   */
  async function revoke(
    user: UserIdentity,
    sealed: SealedSecret,
    provider: Provider,
    signal: AbortSignal,
  ): Promise<string> {
    const opened = await secrets.unseal(user, sealed, signal);
    try {
      const refreshToken = opened.fields.get("refresh_token");
      const token = refreshToken ?? opened.fields.get("access_token");
      if (token === undefined) return "no_token";
      const app = await deps.apps.get(provider.definition.id);
      try {
        return await deps.tokens.revoke({
          provider,
          app,
          token,
          tokenTypeHint: refreshToken === undefined ? "access_token" : "refresh_token",
          signal,
        });
      } finally {
        app.clientSecret.fill(0);
      }
    } finally {
      for (const value of opened.fields.values()) value.fill(0);
    }
  }

  return {
    async delete(user, secretId, actor) {
      // Absent and another user's answer alike, before anything is sent anywhere (SPEC I4).
      const sealed = await secrets.fetch(user, secretId);
      if (sealed.secret.connection !== null) await revokeAtProvider(user, sealed, actor);
      await secrets.delete(user, secretId);
    },
  };
}
