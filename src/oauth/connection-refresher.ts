import type { Kysely } from "kysely";
import type { AuditActor, AuditedRunner } from "../audit/audited-operation.js";
import type { UserIdentity } from "../auth/identity.js";
import { BrokerError, untilAborted } from "../errors.js";
import type { Logger } from "../log/logger.js";
import type { OAuthSettings } from "../outbound/oauth-schema.js";
import type { Provider } from "../outbound/provider-registry.js";
import { isOperationClass } from "../policy/operation-class.js";
import type { SealedSecret, SecretService } from "../secrets/secret-service.js";
import {
  findConnection,
  markNeedsReconsent,
  releaseRefreshLease,
  takeRefreshLease,
} from "../store/oauth-connections.repository.js";
import type { Database } from "../store/schema.js";
import type { StoredConnection } from "../store/secrets.repository.js";
import type { OAuthAppStore } from "./oauth-app-store.js";
import type { TokenEndpointClient, TokenSet } from "./token-endpoint-client.js";
import { InvalidGrant, isTokenEndpointError } from "./token-endpoint-errors.js";

/** The proxied call a refresh runs for: its cancellation and who to audit it as. */
export interface RefreshScope {
  readonly signal: AbortSignal;
  readonly actor: AuditActor;
}

/** Refresh on use (issue 15 item 4): an OAuth connection's access token, fresh before each call. */
export interface ConnectionRefresher {
  /**
   * The connection ready for use: `sealed` itself while its access token is not due (one date
   * comparison), else the version a refresh wrote — by this call, or by another call or replica
   * that refreshed first. A connection that needs re-consent is refused without contacting the
   * provider (failed_precondition, reason connection_needs_reconsent).
   */
  fresh(user: UserIdentity, sealed: SealedSecret, scope: RefreshScope): Promise<SealedSecret>;
}

/** The refusal of a connection whose grant the provider no longer honours. */
export function needsReconsent(cause?: unknown): BrokerError {
  return new BrokerError(
    "failed_precondition",
    "the OAuth connection is no longer authorized by the provider: the user must reconnect",
    { reason: "connection_needs_reconsent", ...(cause === undefined ? {} : { cause }) },
  );
}

export interface ConnectionRefresherDeps {
  readonly db: Kysely<Database>;
  readonly registry: { get(id: string): Provider | undefined };
  readonly apps: Pick<OAuthAppStore, "get">;
  readonly tokens: Pick<TokenEndpointClient, "refresh" | "exchangeLongLived">;
  readonly secrets: Pick<SecretService, "fetch" | "unseal" | "put">;
  readonly audited: Pick<AuditedRunner, "run">;
  readonly logger: Logger;
  readonly now?: () => number;
  /**
   * How long a replica holds the refresh lease: longer than a token request may take (the token
   * endpoint client caps those at 30 s), so a live refresh is never taken over; a replica that
   * died holding it delays the next refresh by at most this.
   */
  readonly leaseMs?: number;
  /** How often a replica waiting for another's refresh looks at the row again. */
  readonly pollMs?: number;
}

const DEFAULT_LEASE_MS = 45_000;
const DEFAULT_POLL_MS = 25;
// A refresh is one token request: most finish within a poll or two; a stuck one is not hammered.
const MAX_POLL_MS = 500;

export function createConnectionRefresher(deps: ConnectionRefresherDeps): ConnectionRefresher {
  const { db, registry, logger } = deps;
  const now = deps.now ?? Date.now;
  const leaseMs = deps.leaseMs ?? DEFAULT_LEASE_MS;
  const pollMs = deps.pollMs ?? DEFAULT_POLL_MS;
  // Calls on this replica for the same connection share one refresh (and one lease attempt).
  const inFlight = new Map<string, Promise<SealedSecret>>();

  const oauthOf = (provider: string): OAuthSettings | undefined => registry.get(provider)?.definition.oauth;

  /** Whether the access token expires within the provider's margin (never, if it has no expiry). */
  function isDue(connection: StoredConnection, oauth: OAuthSettings | undefined): boolean {
    if (connection.expiresAt === null || oauth === undefined) return false;
    return connection.expiresAt.getTime() - now() <= oauth.refresh.marginSeconds * 1000;
  }

  const isExpired = (connection: StoredConnection): boolean =>
    connection.expiresAt !== null && connection.expiresAt.getTime() <= now();

  /** Facebook renews a live token by exchange; others need a stored refresh token (names are not secret). */
  const isRenewable = (
    sealed: SealedSecret,
    connection: StoredConnection,
    oauth: OAuthSettings | undefined,
  ): boolean =>
    oauth?.longLivedExchange === "facebook"
      ? !isExpired(connection)
      : sealed.secret.fieldNames.includes("refresh_token");

  return {
    async fresh(user, sealed, scope) {
      const connection = sealed.secret.connection;
      if (connection === null) return sealed;
      if (connection.status === "needs_reconsent") throw needsReconsent();
      const oauth = oauthOf(sealed.secret.provider);
      if (!isDue(connection, oauth)) return sealed;
      if (!isRenewable(sealed, connection, oauth)) {
        // No refresh token, or a Facebook token already expired (it can only be exchanged while
        // valid): the token works until it expires, then only a new consent helps — recorded,
        // so ListSecrets says so and the provider is not asked again.
        if (!isExpired(connection)) return sealed;
        await markNeedsReconsent(db, sealed.secret.id, sealed.secret.version);
        throw needsReconsent();
      }
      const id = sealed.secret.id;
      let shared = inFlight.get(id);
      if (shared === undefined) {
        // Detached from this call's cancellation: a refresh the provider has answered must be
        // stored, or a rotated refresh token would be lost with it.
        shared = refreshOrWait(user, sealed, scope.actor).finally(() => inFlight.delete(id));
        // Observed here too: a caller that gave up must not leave its rejection unhandled.
        shared.catch(() => undefined);
        inFlight.set(id, shared);
      }
      return untilAborted(
        shared,
        scope.signal,
        () => new BrokerError("unavailable", "the call was cancelled"),
      );
    },
  };

  /**
   * Takes the connection's refresh lease and refreshes, or — another replica holds it — waits for
   * the version it writes. The lease is a compare-and-set on the secret's row (the row lock of an
   * UPDATE, re-checking the version and status under it), held across the token request without
   * a transaction open over the network.
   */
  async function refreshOrWait(
    user: UserIdentity,
    first: SealedSecret,
    actor: AuditActor,
  ): Promise<SealedSecret> {
    const id = first.secret.id;
    const deadline = now() + leaseMs;
    const version = first.secret.version;
    let wait = pollMs;
    for (;;) {
      if (await takeRefreshLease(db, id, version, new Date(now()), new Date(now() + leaseMs))) {
        return refreshHoldingLease(user, first, actor);
      }
      const head = await findConnection(db, user.userRef, id);
      if (head === undefined) throw new BrokerError("not_found", "secret not found");
      if (head.connection.status === "needs_reconsent") throw needsReconsent();
      // The winner's version (or a reconnect's): the freshest token there is, used as it is.
      if (head.version !== version) return deps.secrets.fetch(user, id);
      if (now() >= deadline) {
        // The lease holder neither finished nor gave up in time. A token not yet expired still works.
        if (!isExpired(head.connection)) return first;
        throw new BrokerError("unavailable", "the OAuth connection is being refreshed; try again later");
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
      wait = Math.min(wait * 2, MAX_POLL_MS);
    }
  }

  async function refreshHoldingLease(
    user: UserIdentity,
    sealed: SealedSecret,
    actor: AuditActor,
  ): Promise<SealedSecret> {
    const { id, provider, version } = sealed.secret;
    const connection = sealed.secret.connection as StoredConnection;
    const signal = AbortSignal.timeout(leaseMs);
    try {
      await deps.audited.run(
        actor,
        {
          action: "secret.refresh",
          sensitive: true,
          target: id,
          detail: { provider, secretVersion: version },
          resultDetail: (written: number) => ({ secretVersion: written }),
        },
        () => refreshAndStore(user, sealed, connection, signal),
      );
    } catch (err) {
      if (err instanceof InvalidGrant) {
        // The refresh token (or Facebook's token) is revoked or expired: nothing but a new
        // consent helps, so later calls are refused at once without asking the provider again.
        await markNeedsReconsent(db, id, version);
        logger.warn(
          { provider, secretId: id },
          "oauth: the provider refused the grant; the connection needs re-consent",
        );
        throw needsReconsent(err);
      }
      await releaseRefreshLease(db, id, version).catch((releaseErr: unknown) =>
        logger.warn({ err: releaseErr, secretId: id }, "oauth: could not release a refresh lease"),
      );
      // The provider is down or refused otherwise: the stored token is kept. If it has not
      // expired yet (it was only within the margin) the call goes ahead with it.
      if (!isExpired(connection)) {
        logger.warn(
          { provider, secretId: id, failure: isTokenEndpointError(err) ? err.failure : "error" },
          "oauth: refresh failed; using the current access token until it expires",
        );
        return sealed;
      }
      throw err;
    }
    return deps.secrets.fetch(user, id);
  }

  /** Asks the provider for new tokens and stores them as the connection's next version. */
  async function refreshAndStore(
    user: UserIdentity,
    sealed: SealedSecret,
    connection: StoredConnection,
    signal: AbortSignal,
  ): Promise<number> {
    const provider = registry.get(sealed.secret.provider);
    const oauth = provider?.definition.oauth;
    if (provider === undefined || oauth === undefined) {
      throw new BrokerError("failed_precondition", "the connection's provider has no OAuth settings");
    }
    const opened = await deps.secrets.unseal(user, sealed, signal);
    let tokens: TokenSet | undefined;
    try {
      tokens = await requestTokens(provider, oauth, opened.fields, signal);
      const fields = new Map(opened.fields);
      fields.set("access_token", tokens.accessToken);
      // Rotation: a new refresh token replaces the old one; without one in the answer the old
      // one stays valid (RFC 6749 §6) and is kept.
      if (tokens.refreshToken !== undefined) fields.set("refresh_token", tokens.refreshToken);
      const expiresAt =
        tokens.expiresInSeconds === undefined ? null : new Date(now() + tokens.expiresInSeconds * 1000);
      const grant = sealed.secret.grant?.filter(isOperationClass);
      const stored = await deps.secrets.put(
        user,
        {
          secretId: sealed.secret.id,
          provider: sealed.secret.provider,
          label: undefined,
          fields,
          ...(grant === undefined ? {} : { grant }),
          connection: { status: "active", expiresAt, scopes: tokens.scopes ?? connection.scopes },
        },
        signal,
      );
      return stored.version;
    } finally {
      for (const value of opened.fields.values()) value.fill(0);
      tokens?.accessToken.fill(0);
      tokens?.refreshToken?.fill(0);
    }
  }

  async function requestTokens(
    provider: Provider,
    oauth: OAuthSettings,
    fields: ReadonlyMap<string, Buffer>,
    signal: AbortSignal,
  ): Promise<TokenSet> {
    const app = await deps.apps.get(provider.definition.id);
    try {
      if (oauth.longLivedExchange === "facebook") {
        // Facebook has no refresh tokens: a long-lived token is exchanged for a new one while
        // it is still valid. Once it has expired only a new login helps.
        const accessToken = fields.get("access_token") ?? Buffer.alloc(0);
        return await deps.tokens.exchangeLongLived({ provider, app, accessToken, signal });
      }
      // isRenewable checked the field is there.
      const refreshToken = fields.get("refresh_token") ?? Buffer.alloc(0);
      return await deps.tokens.refresh({ provider, app, refreshToken, signal });
    } finally {
      app.clientSecret.fill(0);
    }
  }
}
