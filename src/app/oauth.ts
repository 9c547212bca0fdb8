import { readFile } from "node:fs/promises";
import type { UserCallGuard } from "../api/rpc/call-guard.js";
import { createConnectionServiceHandlers } from "../api/rpc/connection-service-handlers.js";
import { registerService, type ServiceRegistration } from "../api/transport/handlers.js";
import { createOAuthCallbackServer } from "../api/transport/oauth-callback-server.js";
import { loadServerTls } from "../api/transport/tls-credentials.js";
import type { Config } from "../config/config.js";
import { ConnectionService } from "../gen/keybroker/v1/connections_pb.js";
import type { Logger } from "../log/logger.js";
import { createConnectFlow } from "../oauth/connect-flow.js";
import { createOAuthAppStore } from "../oauth/oauth-app-store.js";
import { createTokenEndpointClient } from "../oauth/token-endpoint-client.js";
import type { Resolver } from "../outbound/guarded-connector.js";
import type { DatabaseHandle } from "../store/database.js";
import type { Audit } from "./audit.js";
import type { Keys } from "./keys.js";
import type { Lifecycle } from "./lifecycle.js";
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
    readonly config: Pick<Config, "oauth" | "outboundCaFile">;
    readonly database: DatabaseHandle;
    readonly keys: Pick<Keys, "keyring">;
    readonly services: Pick<Services, "registry" | "secrets">;
    readonly audit: Audit;
    readonly guard: UserCallGuard;
    readonly logger: Logger;
    readonly resolve?: Resolver | undefined;
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
  const ca = config.outboundCaFile === undefined ? undefined : await readFile(config.outboundCaFile);
  const tokens = createTokenEndpointClient({
    logger,
    ...(deps.resolve === undefined ? {} : { resolve: deps.resolve }),
    ...(ca === undefined ? {} : { ca }),
  });
  lifecycle.defer("oauth token endpoint client", () => tokens.close());
  const apps = createOAuthAppStore({
    db: database.db,
    keyring: keys.keyring,
    isOAuthProvider: (id) => services.registry.get(id)?.definition.oauth !== undefined,
  });
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
  return {
    service: registerService(
      ConnectionService,
      createConnectionServiceHandlers({ guard, connect, audited: audit.audited }),
    ),
    listen: () => server.listen(oauth.listener.host, oauth.listener.port),
  };
}
