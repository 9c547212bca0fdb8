import {
  type ChannelCredentials,
  type Client,
  credentials,
  type GrpcObject,
  type ServiceClientConstructor,
  status,
} from "@grpc/grpc-js";
import { afterAll, beforeAll, expect, it } from "vitest";
import { type CallerKeyAdmin, createCallerKeyAdmin } from "../../../src/admin/caller-key-admin.js";
import { createUserShredder } from "../../../src/admin/user-shredder.js";
import { createAdminServiceHandlers } from "../../../src/api/rpc/admin-service-handlers.js";
import { createUserCallGuard } from "../../../src/api/rpc/call-guard.js";
import { createGrpcServer, type GrpcServer } from "../../../src/api/transport/grpc-server.js";
import { registerService } from "../../../src/api/transport/handlers.js";
import { loadServerTlsCredentials } from "../../../src/api/transport/tls-credentials.js";
import { type AuditLog, createAuditLog } from "../../../src/audit/audit-log.js";
import { createAuditReader } from "../../../src/audit/audit-reader.js";
import { createAuditedRunner } from "../../../src/audit/audited-operation.js";
import { createCallerAuthenticator } from "../../../src/auth/caller-authenticator.js";
import { clientCertificateSha256 } from "../../../src/auth/client-certificate.js";
import { BrokerError } from "../../../src/errors.js";
import { AdminService } from "../../../src/gen/keybroker/v1/admin_pb.js";
import { createLogger } from "../../../src/log/logger.js";
import { createCallerKeyLookup } from "../../../src/store/caller-keys.repository.js";
import { asServiceError, loadKeybrokerPackage, unary } from "../../support/grpc-client.js";
import {
  type ClientCertificate,
  createMtlsCertificates,
  type MtlsCertificates,
} from "../../support/mtls-certificates.js";
import {
  createTestDatabase,
  describeOnEachDatabase,
  type TestDatabase,
} from "../../support/test-database.js";

const DEADLINE_MS = 5_000;

/**
 * Catalogue B22 on the real grpc-js edge: TLS credentials from files, the real caller
 * authenticator, guard, audit log and AdminService handlers over a real database. Only the
 * user-token verifier is absent (admin calls never use it).
 */
describeOnEachDatabase("mTLS caller authentication (%s)", (kind) => {
  let certs: MtlsCertificates;
  let database: TestDatabase;
  let audit: AuditLog;
  let admin: CallerKeyAdmin;
  let lookups = 0;
  const servers: GrpcServer[] = [];
  const clients: Client[] = [];
  /** The mTLS port (client certificates from the CA required), server-only TLS, plaintext. */
  const address = { mtls: "", tls: "", plain: "" };
  let aliceKey = "";
  let unboundKey = "";

  beforeAll(async () => {
    certs = createMtlsCertificates();
    database = await createTestDatabase(kind);
    const logger = createLogger({ level: "silent" });
    audit = createAuditLog({ prepared: database.prepared, batchMaxDelayMs: 0 });
    admin = createCallerKeyAdmin({ db: database.db });
    const stored = createCallerKeyLookup(database.prepared);
    const callers = createCallerAuthenticator({
      lookup: {
        findByHash(hash) {
          lookups++;
          return stored.findByHash(hash);
        },
      },
    });
    const tokens = {
      verify: async (): Promise<never> => {
        throw new BrokerError("unauthenticated", "admin calls carry no user token");
      },
    };
    const guard = createUserCallGuard({ callers, tokens, audit, logger });
    const services = [
      registerService(
        AdminService,
        createAdminServiceHandlers({
          guard,
          audited: createAuditedRunner({ audit, logger }),
          auditReader: createAuditReader({ db: database.db, flush: () => audit.flush() }),
          callerKeys: admin,
          shredder: createUserShredder({ db: database.db, userDataKeys: { forget: () => undefined } }),
          userRefOf: () => Buffer.alloc(32),
        }),
      ),
    ];
    const files = { certFile: certs.serverCertFile, keyFile: certs.serverKeyFile };
    const start = async (credentials?: Awaited<ReturnType<typeof loadServerTlsCredentials>>) => {
      const server = createGrpcServer({
        services,
        logger,
        ...(credentials === undefined ? {} : { credentials }),
      });
      servers.push(server);
      return `127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
    };
    address.mtls = await start(await loadServerTlsCredentials({ ...files, clientCaFile: certs.caFile }));
    address.tls = await start(await loadServerTlsCredentials(files));
    address.plain = await start();

    aliceKey = (
      await admin.create({
        name: "bound to alice",
        scopes: ["admin"],
        expiresAt: null,
        clientCertSha256: clientCertificateSha256(certs.alice.cert),
      })
    ).key;
    unboundKey = (await admin.create({ name: "unbound", scopes: ["admin"], expiresAt: null })).key;
  });

  afterAll(async () => {
    for (const client of clients) client.close();
    await Promise.all(servers.map((server) => server.shutdown(1_000)));
    await audit?.close();
    await database?.close();
    certs?.remove();
  });

  /** An AdminService client on its own channel, so no test reuses another's TLS connection. */
  function adminClient(target: string, channel: ChannelCredentials): Client {
    const v1 = (loadKeybrokerPackage().keybroker as GrpcObject).v1 as GrpcObject;
    const AdminClient = v1.AdminService as ServiceClientConstructor;
    const client = new AdminClient(target, channel, {
      "grpc.use_local_subchannel_pool": 1,
      // The certificate also names localhost: SNI must be a host name, never an IP (RFC 6066).
      "grpc.ssl_target_name_override": "localhost",
    });
    clients.push(client);
    return client;
  }

  const withCertificate = (client: ClientCertificate): ChannelCredentials =>
    credentials.createSsl(Buffer.from(certs.ca), Buffer.from(client.key), Buffer.from(client.cert));
  const withoutCertificate = (): ChannelCredentials => credentials.createSsl(Buffer.from(certs.ca));

  /** ListCallerKeys (admin scope, no user token); resolves to the status code. */
  async function listCallerKeys(
    client: Client,
    callerKey: string,
  ): Promise<{ code: number; details: string }> {
    try {
      await unary(client, "ListCallerKeys", {}, { callerKey, deadlineMs: DEADLINE_MS });
      return { code: status.OK, details: "" };
    } catch (err) {
      const failure = asServiceError(err);
      return { code: failure.code, details: failure.details };
    }
  }

  async function authFailures(): Promise<number> {
    await audit.flush();
    const rows = await database.db
      .selectFrom("audit_events")
      .select("seq")
      .where("action", "=", "auth.failure")
      .execute();
    return rows.length;
  }

  it("B22 accepts a caller key bound to a client certificate over mTLS with that certificate", async () => {
    const client = adminClient(address.mtls, withCertificate(certs.alice));
    const response = await unary(
      client,
      "ListCallerKeys",
      {},
      { callerKey: aliceKey, deadlineMs: DEADLINE_MS },
    );
    const names = (response.response.callerKeys as Array<{ name: string }>).map((k) => k.name);
    expect(names).toContain("bound to alice");
  });

  it("B22 answers UNAUTHENTICATED 'invalid caller key' for a bound key with another certificate of the same CA", async () => {
    const before = await authFailures();
    const result = await listCallerKeys(adminClient(address.mtls, withCertificate(certs.bob)), aliceKey);
    expect(result).toEqual({ code: status.UNAUTHENTICATED, details: "invalid caller key" });
    expect(await authFailures()).toBe(before + 1);
  });

  it("B22 accepts a caller key without a binding with any certificate the client CA issued", async () => {
    for (const certificate of [certs.alice, certs.bob]) {
      const result = await listCallerKeys(
        adminClient(address.mtls, withCertificate(certificate)),
        unboundKey,
      );
      expect(result.code).toBe(status.OK);
    }
  });

  it.each([
    ["a client certificate from another CA", () => withCertificate(certs.foreign)],
    ["an expired client certificate from the right CA", () => withCertificate(certs.expired)],
    ["no client certificate", withoutCertificate],
  ])("B22 refuses %s in the TLS handshake, before any caller key lookup", async (_what, channel) => {
    const before = lookups;
    // The unbound admin key would succeed on any connection that got through.
    const result = await listCallerKeys(adminClient(address.mtls, channel()), unboundKey);
    expect(result.code).toBe(status.UNAVAILABLE);
    expect(lookups).toBe(before);
  });

  it("B22 refuses a bound key on server-only TLS and on plaintext, where no certificate is presented", async () => {
    const overTls = adminClient(address.tls, withCertificate(certs.alice));
    const overPlaintext = adminClient(address.plain, credentials.createInsecure());
    for (const client of [overTls, overPlaintext]) {
      expect(await listCallerKeys(client, aliceKey)).toEqual({
        code: status.UNAUTHENTICATED,
        details: "invalid caller key",
      });
      expect((await listCallerKeys(client, unboundKey)).code).toBe(status.OK);
    }
  });

  it("B22 keeps the certificate binding when a bound key is rotated", async () => {
    const created = await admin.create({
      name: "rotated",
      scopes: ["admin"],
      expiresAt: null,
      clientCertSha256: clientCertificateSha256(certs.alice.cert),
    });
    const rotated = await admin.rotate(created.summary.id, 0);
    expect(rotated.summary.clientCertSha256).toEqual(clientCertificateSha256(certs.alice.cert));
    const asAlice = await listCallerKeys(
      adminClient(address.mtls, withCertificate(certs.alice)),
      rotated.key,
    );
    const asBob = await listCallerKeys(adminClient(address.mtls, withCertificate(certs.bob)), rotated.key);
    expect(asAlice.code).toBe(status.OK);
    expect(asBob.code).toBe(status.UNAUTHENTICATED);
  });
});
