import type { UserCallGuard } from "../api/rpc/call-guard.js";
import { createConnectionServiceHandlers } from "../api/rpc/connection-service-handlers.js";
import { registerService, type ServiceRegistration } from "../api/transport/handlers.js";
import { createOAuthCallbackServer } from "../api/transport/oauth-callback-server.js";
import { loadServerTls } from "../api/transport/tls-credentials.js";
import type { Config } from "../config/config.js";
import { ConnectionService } from "../gen/keybroker/v1/connections_pb.js";
import type { Logger } from "../log/logger.js";
import { createConnectFlow } from "../oauth/connect-flow.js";
import type { DatabaseHandle } from "../store/database.js";
import { deleteExpiredAuthorizations } from "../store/oauth-authorizations.repository.js";
import type { Audit } from "./audit.js";
import type { Keys } from "./keys.js";
import type { Lifecycle } from "./lifecycle.js";

const PRUNE_INTERVAL_MS = 10 * 60_000;

import type { Services } from "./services.js";

export interface OAuthParts {
  /** ConnectionService on the app ports (answers FAILED_PRECONDITION when OAuth is off). */
  readonly service: ServiceRegistration;
  /** Binds the public callback listener when configured; resolves with its port. */
  listen(): Promise<number | undefined>;
}

/** Issue 15: the app-credential store, the token-endpoint client, the connect flow and its listener. */
export async function openOAuth(
  lifecycle: Lifecycle,
  deps: {
    readonly config: Pick<Config, "oauth">;
    readonly database: DatabaseHandle;
    readonly keys: Pick<Keys, "keyring">;
    readonly services: Pick<Services, "registry" | "secrets" | "oauth">;
    readonly audit: Audit;
    readonly guard: UserCallGuard;
    readonly logger: Logger;
  },
): Promise<OAuthParts> {
  const { config, database, keys, services, audit, guard, logger } = deps;
  const oauth = config.oauth;
  if (oauth === undefined) {
    return {
      service: registerService(
        ConnectionService,
        createConnectionServiceHandlers({ guard, connect: undefined, audited: audit.audited }),
      ),
      listen: async () => undefined,
    };
  }
  // The same token-endpoint client and app store the proxy's refresher and deleter use.
  const { apps, tokens } = services.oauth;
  const connect = createConnectFlow({
    db: database.db,
    keyring: keys.keyring,
    registry: services.registry,
    apps,
    tokens,
    secrets: services.secrets,
    audited: audit.audited,
    logger,
    callbackUrl: oauth.callbackUrl,
    returnUrlsFor: (name) => oauth.returnUrls[name] ?? [],
    stateTtlMs: oauth.stateTtlMs,
  });
  const tls = oauth.listener.tls === undefined ? undefined : await loadServerTls(oauth.listener.tls);
  const server = createOAuthCallbackServer({
    complete: (q, signal) => connect.complete(q, signal),
    tls,
    logger,
  });
  lifecycle.defer("oauth callback listener", () => server.close());
  // Housekeeping off every call's path: expired pending authorizations can never be completed.
  const pruning = setInterval(() => {
    deleteExpiredAuthorizations(database.db, new Date()).catch((err: unknown) =>
      logger.warn(
        { err: { message: err instanceof Error ? err.message : "unknown" } },
        "oauth: pruning expired pending authorizations failed; retrying at the next interval",
      ),
    );
  }, PRUNE_INTERVAL_MS);
  pruning.unref();
  lifecycle.defer("oauth authorization pruning", async () => clearInterval(pruning));
  return {
    service: registerService(
      ConnectionService,
      createConnectionServiceHandlers({ guard, connect, audited: audit.audited }),
    ),
    listen: () => server.listen(oauth.listener.host, oauth.listener.port),
  };
}
