import { randomUUID } from "node:crypto";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Registry } from "prom-client";
import { createCallerKeyAdmin } from "../admin/caller-key-admin.js";
import { createUserShredder } from "../admin/user-shredder.js";
import { createAdminServiceHandlers } from "../api/rpc/admin-service-handlers.js";
import type { UserCallGuard } from "../api/rpc/call-guard.js";
import { createProxyServiceHandlers } from "../api/rpc/proxy-service-handlers.js";
import { createSecretServiceHandlers } from "../api/rpc/secret-service-handlers.js";
import {
  createBackchannelLogoutRoute,
  createSessionServiceHandlers,
} from "../api/rpc/session-service-handlers.js";
import { routeGrpcLibraryLogs } from "../api/transport/grpc-library-logs.js";
import { registerService, type ServiceRegistration } from "../api/transport/handlers.js";
import { tracedRegistrations } from "../api/transport/traced-handlers.js";
import { createAuditReader } from "../audit/audit-reader.js";
import { createSessionRevocations } from "../auth/session-revocations.js";
import type { Config } from "../config/config.js";
import { AdminService } from "../gen/keybroker/v1/admin_pb.js";
import { ProxyService } from "../gen/keybroker/v1/proxy_pb.js";
import { SecretService } from "../gen/keybroker/v1/secrets_pb.js";
import { SessionService } from "../gen/keybroker/v1/sessions_pb.js";
import type { Keyring } from "../keys/keyring.js";
import type { MacKey } from "../keys/mac-key.js";
import { deriveUserRef } from "../keys/user-ref.js";
import type { Logger } from "../log/logger.js";
import { createMetrics } from "../observability/metrics.js";
import { createReadiness } from "../observability/readiness.js";
import { tracedDatabase } from "../observability/traced-database.js";
import type { Resolver } from "../outbound/guarded-connector.js";
import { createSecretUses } from "../secrets/secret-uses.js";
import type { DatabaseHandle } from "../store/database.js";
import { type Audit, openAudit } from "./audit.js";
import { openAuditCheckpoints } from "./audit-checkpoints.js";
import { createAuth } from "./auth.js";
import { readBuildInfo } from "./build-info.js";
import { type Keys, openDataKeyCache, openKeys } from "./keys.js";
import { createLifecycle, unwindOnFailure } from "./lifecycle.js";
import { openOAuth } from "./oauth.js";
import { registerPinService } from "./pins.js";
import { type BoundPorts, createServers } from "./servers.js";
import { createServices, type Services } from "./services.js";
import { openSessions } from "./sessions.js";
import { createSignals, type Signals } from "./signals.js";
import { openStorage, prepareSchema } from "./storage.js";
import { openTracing } from "./tracing.js";

/** Parts a test or the dev command may supply instead of building them from config. */
export interface AppOverrides {
  readonly database?: DatabaseHandle;
  readonly keyring?: Keyring;
  /** DNS for the egress guard (tests resolve fake hostnames to loopback). */
  readonly resolve?: Resolver;
  /** Where spans go when tracing is on (tests: the SDK's in-memory exporter) instead of OTLP. */
  readonly spanExporter?: SpanExporter;
}

export interface App {
  /** Listens on the configured ports; resolves with the bound ports. */
  start(): Promise<BoundPorts>;
  /** Graceful: health NOT_SERVING, drain in-flight calls (bounded), close pools. */
  stop(): Promise<void>;
  readonly database: DatabaseHandle;
  readonly keyring: Keyring;
  /** This app's metrics (a `serve --workers N` worker hands them to the primary to aggregate). */
  readonly metricsRegistry: Registry;
  /**
   * Waits until every audit row recorded so far is committed. Outcome rows of sensitive calls are
   * written after the call answers (see audited-operation.ts); `stop` flushes them itself.
   */
  flushAudit(): Promise<void>;
}

/**
 * The one composition root: builds every part from the config and wires dependencies
 * explicitly. Nothing else in src/ constructs a service or holds module state.
 *
 * Each step registers the teardown of what it creates with one lifecycle, so `stop` and a
 * failed start (a throw in any step, or a port that will not bind) both release everything
 * built so far, newest first: ports drain before the audit log flushes, the audit log
 * flushes before the database closes, key material is zeroed and the KMS client released.
 */
export async function createApp(
  config: Config,
  logger: Logger,
  options: { migrate: boolean; overrides?: AppOverrides },
): Promise<App> {
  // Process-wide, so set here once: grpc-js must never print a caller's token to stderr.
  routeGrpcLibraryLogs(logger);
  const overrides = options.overrides ?? {};
  const lifecycle = createLifecycle({ logger });

  return unwindOnFailure(lifecycle, async () => {
    const readiness = createReadiness({
      parts: { migrations: "migrations pending", pepper: "pepper not loaded", serving: "not serving yet" },
    });
    const buildInfo = readBuildInfo(config.gitCommit);
    // First, so it stops last. Undefined when off: then nothing below is wrapped for it.
    const tracing = await openTracing(lifecycle, {
      config,
      version: buildInfo.version,
      logger,
      exporter: overrides.spanExporter,
    });
    const opened = await openStorage(lifecycle, {
      config: config.database,
      logger,
      database: overrides.database,
    });
    const database = tracing === undefined ? opened : tracedDatabase(opened, tracing);
    await prepareSchema(database, options.migrate ? "migrate" : "require-current", logger);
    readiness.markReady("migrations");

    const dataKeyCache = openDataKeyCache(lifecycle, config.dataKeyCache);
    const metrics = createMetrics({
      dataKeyCacheStats: () => dataKeyCache.stats(),
      processMetrics: config.processMetrics,
      buildInfo,
    });
    const keys = await openKeys(lifecycle, {
      config,
      database,
      metrics,
      dataKeyCache,
      logger,
      keyring: overrides.keyring,
      tracing,
    });
    readiness.markReady("pepper");

    const checkpoints = await openAuditCheckpoints(lifecycle, {
      config: config.auditCheckpoints,
      database,
      logger,
    });
    const audit = openAudit(lifecycle, {
      database,
      logger,
      metrics,
      onAppended: checkpoints && ((lastSeq) => checkpoints.checkpointer.noteAppended(lastSeq)),
      tracing,
    });
    const revocations = createSessionRevocations({
      maxStalenessMs: config.sessions.revocationMaxStalenessMs,
    });
    const signals = await createSignals(lifecycle, { config, database, audit: audit.log, metrics, logger });
    const guard = await createAuth(lifecycle, {
      config,
      database,
      pepper: keys.pepper,
      audit: audit.log,
      metrics,
      logger,
      revocations,
      isSuspensionHeld: signals.suspender.isHeld,
      forgetUserKeys: (userRef) => keys.userDataKeys.forgetUser(userRef),
      tracing,
    });
    const sessions = await openSessions(lifecycle, {
      config,
      database,
      pepper: keys.pepper,
      audit: audit.log,
      revocations,
      logger,
    });
    const services = await createServices(lifecycle, {
      config,
      database,
      keys,
      metrics,
      logger,
      resolve: overrides.resolve,
      tracing,
      audited: audit.audited,
    });
    const rpc = registerRpcServices({
      config,
      database,
      keys,
      guard,
      audit,
      services,
      signals,
      checkpointKey: checkpoints?.macKey,
    });
    const oauth = await openOAuth(lifecycle, {
      config,
      database,
      keys,
      services,
      audit,
      guard,
      logger,
    });
    const traced = (registrations: ServiceRegistration[]) =>
      tracing === undefined ? registrations : tracedRegistrations(registrations, tracing);
    const servers = await createServers(lifecycle, {
      config,
      services: traced([
        ...rpc.app,
        registerService(SessionService, createSessionServiceHandlers({ guard, sessions })),
        registerPinService({ config, database, keys, guard, audit: audit.log }),
        oauth.service,
      ]),
      adminServices: traced(rpc.admin),
      largestRequestBodyBytes: services.largestRequestBodyBytes,
      // The issuer's back-channel logout, beside the RPCs (Connect port); only with audiences set.
      formRoutes:
        config.sessions.logoutAudiences === undefined
          ? []
          : [createBackchannelLogoutRoute({ sessions, requestId: randomUUID })],
      metrics,
      readiness,
      logger,
    });

    let stopping: Promise<void> | undefined;
    return {
      database,
      keyring: keys.keyring,
      metricsRegistry: metrics.registry,
      flushAudit: () => audit.log.flush(),
      start: () =>
        unwindOnFailure(lifecycle, async () => {
          const ports = { ...(await servers.listen()), publicPort: await oauth.listen() };
          readiness.markReady("serving");
          logger.info(ports, "keybroker serving");
          return ports;
        }),
      stop() {
        stopping ??= lifecycle.stop().then(() => logger.info("keybroker stopped"));
        return stopping;
      },
    };
  });
}

interface RpcParts {
  readonly config: Pick<Config, "auth">;
  readonly database: DatabaseHandle;
  readonly keys: Keys;
  readonly guard: UserCallGuard;
  readonly audit: Audit;
  readonly services: Services;
  readonly signals: Signals;
  /** Verifies the signed audit checkpoints for AdminService VerifyAudit; none configured: undefined. */
  readonly checkpointKey: MacKey | undefined;
}

/**
 * The three RPC services, each a thin handler set over one domain service. AdminService is kept
 * apart: it is served on its own listener only (L6).
 */
function registerRpcServices(parts: RpcParts): {
  app: ServiceRegistration[];
  admin: ServiceRegistration[];
} {
  const { config, database, guard, services } = parts;
  const { userDataKeys, pepper } = parts.keys;
  const { log: audit, audited } = parts.audit;
  const secretService = registerService(
    SecretService,
    createSecretServiceHandlers({
      guard,
      secrets: services.secrets,
      deleter: services.deleter,
      // A secret's uses, from the trail; ownership is proven by reading the (still sealed) secret.
      uses: createSecretUses({
        db: database.db,
        owns: async (user, secretId) => void (await services.secrets.fetch(user, secretId)),
        flush: () => audit.flush(),
      }),
      audited,
    }),
  );
  const proxyService = registerService(
    ProxyService,
    createProxyServiceHandlers({ guard, proxy: services.proxy, audited, signals: parts.signals.monitor }),
  );

  // --- AdminService: its parts are built here, in one block, apart from the other services ---
  const adminService = registerService(
    AdminService,
    createAdminServiceHandlers({
      guard,
      audited,
      auditReader: createAuditReader({
        db: database.db,
        flush: () => audit.flush(),
        checkpointKey: parts.checkpointKey,
      }),
      // An admin key must not mint more admin keys over the wire (L6): only the CLI, with
      // database access, creates or rotates them.
      callerKeys: createCallerKeyAdmin({ db: database.db, grantsAdmin: false }),
      shredder: createUserShredder({ db: database.db, userDataKeys }),
      userRefOf: (subject) => deriveUserRef(pepper, config.auth.issuer, subject),
    }),
  );
  // --- end of AdminService ---

  return { app: [secretService, proxyService], admin: [adminService] };
}
