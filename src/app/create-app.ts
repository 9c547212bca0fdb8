import { readFile } from "node:fs/promises";
import { createCallerKeyAdmin } from "../admin/caller-key-admin.js";
import { createUserShredder } from "../admin/user-shredder.js";
import { createAdminServiceHandlers } from "../api/rpc/admin-service-handlers.js";
import { createUserCallGuard } from "../api/rpc/call-guard.js";
import { createProxyServiceHandlers } from "../api/rpc/proxy-service-handlers.js";
import { createSecretServiceHandlers } from "../api/rpc/secret-service-handlers.js";
import { createConnectServer } from "../api/transport/connect-server.js";
import { routeGrpcLibraryLogs } from "../api/transport/grpc-library-logs.js";
import { createGrpcServer } from "../api/transport/grpc-server.js";
import { registerService } from "../api/transport/handlers.js";
import { loadServerTlsCredentials } from "../api/transport/tls-credentials.js";
import { createAuditLog } from "../audit/audit-log.js";
import { createAuditReader } from "../audit/audit-reader.js";
import { createAuditedRunner } from "../audit/audited-operation.js";
import { createCallerAuthenticator } from "../auth/caller-authenticator.js";
import { createTokenVerifier } from "../auth/token-verifier.js";
import type { Config } from "../config/config.js";
import { AdminService } from "../gen/keybroker/v1/admin_pb.js";
import { ProxyService } from "../gen/keybroker/v1/proxy_pb.js";
import { SecretService } from "../gen/keybroker/v1/secrets_pb.js";
import { createDataKeyCache } from "../keys/data-key-cache.js";
import type { Keyring } from "../keys/keyring.js";
import { loadOrCreatePepper } from "../keys/pepper.js";
import { createRetiredKeyGuard } from "../keys/retired-key-guard.js";
import { createUserDataKeys } from "../keys/user-data-keys.js";
import { deriveFingerprintKey, deriveUserRef } from "../keys/user-ref.js";
import type { Logger } from "../log/logger.js";
import type { CallEndEvent } from "../observability/call-end.js";
import { createInstrumentedKeyring } from "../observability/instrumented-keyring.js";
import { createMetrics } from "../observability/metrics.js";
import { createOpsServer } from "../observability/ops-server.js";
import { createReadiness } from "../observability/readiness.js";
import type { Resolver } from "../outbound/guarded-connector.js";
import { createOutboundClient } from "../outbound/outbound-client.js";
import { loadProviderRegistry } from "../outbound/provider-registry.js";
import { createProxyService } from "../proxy/proxy-service.js";
import { createSecretService } from "../secrets/secret-service.js";
import { createUsageRecorder } from "../secrets/usage-recorder.js";
import { createCallerKeyLookup, markCallerKeyUsed } from "../store/caller-keys.repository.js";
import { type DatabaseHandle, openDatabase } from "../store/database.js";
import { migrateToLatest, pendingMigrations } from "../store/migrate.js";
import { markSecretUsed } from "../store/secrets.repository.js";
import { createKeyringFromConfig } from "./keyring-from-config.js";

/** Parts a test or the dev command may supply instead of building them from config. */
export interface AppOverrides {
  readonly database?: DatabaseHandle;
  readonly keyring?: Keyring;
  /** DNS for the egress guard (tests resolve fake hostnames to loopback). */
  readonly resolve?: Resolver;
}

export interface App {
  /** Listens on the configured ports; resolves with the bound ports. */
  start(): Promise<{ grpcPort: number; connectPort: number | undefined; opsPort: number | undefined }>;
  /** Graceful: health NOT_SERVING, drain in-flight calls (bounded), close pools. */
  stop(): Promise<void>;
  readonly database: DatabaseHandle;
  readonly keyring: Keyring;
  /**
   * Waits until every audit row recorded so far is committed. Outcome rows of sensitive calls are
   * written after the call answers (see audited-operation.ts); `stop` flushes them itself.
   */
  flushAudit(): Promise<void>;
}

/**
 * The one composition root: builds every part from the config and wires dependencies
 * explicitly. Nothing else in src/ constructs a service or holds module state.
 */
export async function createApp(
  config: Config,
  logger: Logger,
  options: { migrate: boolean; overrides?: AppOverrides },
): Promise<App> {
  // Process-wide, so set here once: grpc-js must never print a caller's token to stderr.
  routeGrpcLibraryLogs(logger);
  const overrides = options.overrides ?? {};
  const database = overrides.database ?? (await openDatabase(config.database, logger));
  const ownsDatabase = overrides.database === undefined;
  try {
    if (options.migrate) {
      const applied = await migrateToLatest(database.db);
      if (applied.length > 0) logger.info({ applied }, "database migrated");
    } else {
      const pending = await pendingMigrations(database.db);
      if (pending.length > 0) {
        throw new Error(
          `database has ${pending.length} pending migration(s): run \`keybroker migrate\` first`,
        );
      }
    }

    const readiness = createReadiness({
      parts: { migrations: "migrations pending", pepper: "pepper not loaded", serving: "not serving yet" },
    });
    readiness.markReady("migrations");
    const dataKeyCache = createDataKeyCache(config.dataKeyCache);
    const metrics = createMetrics({
      dataKeyCacheStats: () => dataKeyCache.stats(),
      processMetrics: config.production,
    });
    const baseKeyring = createInstrumentedKeyring({
      keyring: overrides.keyring ?? (await createKeyringFromConfig(config)),
      metrics,
    });
    // After a master-key rotation, rows still wrapped under a retired key fail closed.
    const keyring =
      config.acceptedMasterKeys === undefined
        ? baseKeyring
        : createRetiredKeyGuard(baseKeyring, { acceptedKeyIds: config.acceptedMasterKeys });
    const pepper = await loadOrCreatePepper(database.db, keyring);
    readiness.markReady("pepper");
    const fingerprintKey = deriveFingerprintKey(pepper);

    const { allowedAzp, tokenCacheMaxEntries, ...auth } = config.auth;
    const tokens = createTokenVerifier({
      ...auth,
      ...(allowedAzp === undefined ? {} : { allowedAzp }),
      cacheMaxEntries: tokenCacheMaxEntries,
      deriveUserRef: (issuer, subject) => deriveUserRef(pepper, issuer, subject),
    });
    const callers = createCallerAuthenticator({
      lookup: createCallerKeyLookup(database.prepared),
      markUsed: (id) => {
        markCallerKeyUsed(database.db, id, new Date()).catch((err: unknown) =>
          logger.warn({ err }, "could not record caller key use"),
        );
      },
    });
    const audit = createAuditLog({
      prepared: database.prepared,
      // Flush in the same event-loop turn: at low load a 2 ms batching delay would sit on
      // every sensitive call's latency; under load batches still form while one is in flight.
      batchMaxDelayMs: 0,
      onWriteFailure: (err) => {
        metrics.auditWriteFailed();
        logger.error({ err }, "audit trail write failed");
      },
    });
    const audited = createAuditedRunner({ audit, logger });
    const guard = createUserCallGuard({ callers, tokens, audit, logger });
    // Expiry is otherwise only checked on lookup: sweep so idle users' keys leave memory.
    const sweep = setInterval(() => dataKeyCache.evictExpired(), 30_000);
    sweep.unref();
    const userDataKeys = createUserDataKeys({ keyring, cache: dataKeyCache });
    const registry = await loadProviderRegistry(config.providersFile, { production: config.production });
    const secrets = createSecretService({
      db: database.db,
      prepared: database.prepared,
      userDataKeys,
      fingerprintKey,
      providers: { requiredFields: (id) => registry.get(id)?.definition.requiredFields },
    });
    const outbound = createOutboundClient({
      registry,
      logger,
      onUpstreamCall: (e) => metrics.upstreamCall(e),
      ...(overrides.resolve === undefined ? {} : { resolve: overrides.resolve }),
      ...(config.outboundCaFile === undefined ? {} : { ca: await readFile(config.outboundCaFile) }),
    });
    const markUsed = createUsageRecorder({ record: (id, at) => markSecretUsed(database.db, id, at), logger });
    const proxy = createProxyService({ secrets, outbound, markUsed });

    const services = [
      registerService(SecretService, createSecretServiceHandlers({ guard, secrets, audited })),
      registerService(ProxyService, createProxyServiceHandlers({ guard, proxy, audited })),
      registerService(
        AdminService,
        createAdminServiceHandlers({
          guard,
          audited,
          auditReader: createAuditReader({ db: database.db, flush: () => audit.flush() }),
          callerKeys: createCallerKeyAdmin({ db: database.db }),
          shredder: createUserShredder({ db: database.db, userDataKeys }),
          userRefOf: (subject) => deriveUserRef(pepper, config.auth.issuer, subject),
        }),
      ),
    ];
    const onCallEnd = (e: CallEndEvent) => metrics.rpcCompleted(e);
    const credentials =
      config.grpcTls === undefined ? undefined : await loadServerTlsCredentials(config.grpcTls);
    const grpc = createGrpcServer({
      services,
      logger,
      onCallEnd,
      ...(credentials === undefined ? {} : { credentials }),
    });
    const connect =
      config.connect === undefined ? undefined : createConnectServer({ services, logger, onCallEnd });
    const ops =
      config.ops === undefined
        ? undefined
        : createOpsServer({ metrics, readiness: () => readiness.check(), logger });

    return {
      database,
      keyring,
      flushAudit: () => audit.flush(),
      async start() {
        const opsPort =
          config.ops === undefined || ops === undefined
            ? undefined
            : await ops.listen(config.ops.host, config.ops.port);
        const grpcPort = await grpc.listen(config.grpc.host, config.grpc.port);
        const connectPort =
          config.connect === undefined || connect === undefined
            ? undefined
            : await connect.listen(config.connect.host, config.connect.port);
        readiness.markReady("serving");
        logger.info({ grpcPort, connectPort, opsPort }, "keybroker serving");
        return { grpcPort, connectPort, opsPort };
      },
      async stop() {
        readiness.markShuttingDown();
        await Promise.all([grpc.shutdown(config.shutdownGraceMs), connect?.shutdown(config.shutdownGraceMs)]);
        await outbound.close();
        await audit.close();
        clearInterval(sweep);
        dataKeyCache.clear();
        pepper.fill(0);
        fingerprintKey.fill(0);
        if (ownsDatabase) await database.close();
        await ops?.close();
        logger.info("keybroker stopped");
      },
    };
  } catch (err) {
    if (ownsDatabase) await database.close();
    throw err;
  }
}
