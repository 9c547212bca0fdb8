import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import {
  ConfigError,
  loadConfig,
  loadDatabaseConfig,
  relaxationWarnings,
} from "../../../src/config/config.js";
import { captureLogs } from "../../support/captured-logs.js";

const production = {
  NODE_ENV: "production",
  DATABASE_URL: "postgres://keybroker:s3cretPassw0rd@db.internal:5432/keybroker",
  KEYBROKER_KEYRING: "aws-kms",
  KEYBROKER_KMS_KEY_ID: "alias/keybroker",
  AWS_REGION: "eu-west-1",
  AUTH0_ISSUER: "https://tenant.eu.auth0.com/",
  AUTH0_AUDIENCE: "https://keybroker.example.com/api",
  AUTH0_REQUIRED_PERMISSION: "keybroker:use",
};

function problemsOf(env: Record<string, string | undefined>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("configuration", () => {
  it("accepts a complete production environment and derives the JWKS URL from the issuer", () => {
    const config = loadConfig(production);
    expect(config.production).toBe(true);
    expect(config.auth.jwksUrl).toBe("https://tenant.eu.auth0.com/.well-known/jwks.json");
    expect(config.keyring).toMatchObject({ kind: "aws-kms", keyId: "alias/keybroker", region: "eu-west-1" });
    expect(config.database.kind).toBe("postgres");
    expect(Object.isFrozen(config)).toBe(true);
  });

  it("F6 bounds one KMS attempt to 2 s and opens the keyring breaker after 5 failures for 10 s by default, all configurable", () => {
    const config = loadConfig(production);
    expect(config.keyring).toMatchObject({ kind: "aws-kms", attemptTimeoutMs: 2_000 });
    expect(config.keyringBreaker).toEqual({ failureThreshold: 5, openMs: 10_000 });

    const tuned = loadConfig({
      ...production,
      KEYBROKER_KMS_ATTEMPT_TIMEOUT_MS: "500",
      KEYBROKER_KEYRING_BREAKER_FAILURES: "2",
      KEYBROKER_KEYRING_BREAKER_OPEN_MS: "3000",
    });
    expect(tuned.keyring).toMatchObject({ attemptTimeoutMs: 500 });
    expect(tuned.keyringBreaker).toEqual({ failureThreshold: 2, openMs: 3_000 });
  });

  it("refuses the local keyring in production", () => {
    expect(
      problemsOf({ ...production, KEYBROKER_KEYRING: "local", KEYBROKER_LOCAL_KEYRING_FILE: "/tmp/k.json" }),
    ).toEqual([expect.stringContaining("KEYBROKER_KEYRING")]);
  });

  it("refuses the embedded PGlite in production", () => {
    expect(problemsOf({ ...production, DATABASE_URL: undefined })).toEqual([
      expect.stringContaining("DATABASE_URL"),
    ]);
  });

  it("refuses an http issuer in production, even on loopback", () => {
    expect(problemsOf({ ...production, AUTH0_ISSUER: "http://127.0.0.1:4455/" }).join("\n")).toContain(
      "AUTH0_ISSUER",
    );
  });

  it("allows an http issuer on loopback when KEYBROKER_ALLOW_HTTP_ISSUER=1 (the dev issuer) but not elsewhere", () => {
    const dev = { ...production, KEYBROKER_ALLOW_HTTP_ISSUER: "1", AUTH0_ISSUER: "http://127.0.0.1:4455/" };
    expect(loadConfig(dev).auth.issuer).toBe("http://127.0.0.1:4455/");
    expect(problemsOf({ ...dev, AUTH0_ISSUER: "http://auth.example.com/" }).join("\n")).toContain(
      "AUTH0_ISSUER",
    );
  });

  it("lists every problem at once", () => {
    const problems = problemsOf({
      NODE_ENV: "production",
      KEYBROKER_KEYRING: "aws-kms",
      AUTH0_CLOCK_TOLERANCE_SEC: "90",
    });
    const text = problems.join("\n");
    for (const name of [
      "AUTH0_ISSUER",
      "AUTH0_AUDIENCE",
      "AUTH0_REQUIRED_PERMISSION",
      "AUTH0_CLOCK_TOLERANCE_SEC",
    ]) {
      expect(text).toContain(name);
    }
    expect(problems.length).toBeGreaterThanOrEqual(4);
  });

  it("names variables but never echoes their values (a DATABASE_URL carries a password)", () => {
    const err = (() => {
      try {
        loadConfig({
          ...production,
          DATABASE_URL: "mysql://root:s3cretPassw0rd@db/x",
          KEYBROKER_KEYRING: "local",
        });
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    expect(err?.message).toContain("DATABASE_URL");
    expect(err?.message).not.toContain("s3cretPassw0rd");
  });

  it("caps the clock tolerance at 30 seconds (catalogue A8)", () => {
    expect(problemsOf({ ...production, AUTH0_CLOCK_TOLERANCE_SEC: "31" }).join()).toContain(
      "AUTH0_CLOCK_TOLERANCE_SEC",
    );
    expect(loadConfig({ ...production, AUTH0_CLOCK_TOLERANCE_SEC: "30" }).auth.clockToleranceSec).toBe(30);
  });

  it("never prints the database password, however the config is logged", () => {
    const config = loadConfig(production);
    const logged = captureLogs("info");
    logged.logger.info({ config }, "starting");
    for (const text of [
      JSON.stringify(config),
      String(config.database.kind === "postgres" && config.database.url),
      inspect(config, { depth: 10 }),
      logged.text(),
    ]) {
      expect(text).not.toContain("s3cretPassw0rd");
    }
    expect(config.database.kind === "postgres" && config.database.url.unwrap()).toBe(production.DATABASE_URL);
  });

  describe("production guards (review L7)", () => {
    const { NODE_ENV: _unused, ...noNodeEnv } = production;
    const relaxedStack = {
      ...noNodeEnv,
      DATABASE_URL: undefined,
      KEYBROKER_KEYRING: "local",
      KEYBROKER_LOCAL_KEYRING_FILE: "/tmp/k.json",
      AUTH0_ISSUER: "http://127.0.0.1:4455/",
    };

    it("L7 applies every production guard whatever NODE_ENV says, and by default", () => {
      for (const nodeEnv of [undefined, "development", "test"]) {
        const text = problemsOf({ ...relaxedStack, NODE_ENV: nodeEnv }).join("\n");
        for (const name of ["AUTH0_ISSUER", "AUTH0_JWKS_URL", "DATABASE_URL", "KEYBROKER_KEYRING"]) {
          expect(text).toContain(name);
        }
      }
      expect(loadConfig(noNodeEnv)).toMatchObject({ production: true, relaxations: [] });
    });

    it("L7 relaxes each guard only by its own variable", () => {
      const flags = {
        KEYBROKER_ALLOW_HTTP_ISSUER: ["AUTH0_ISSUER", "AUTH0_JWKS_URL"],
        KEYBROKER_ALLOW_EMBEDDED_DATABASE: ["DATABASE_URL"],
        KEYBROKER_ALLOW_LOCAL_KEYRING: ["KEYBROKER_KEYRING"],
      };
      for (const [flag, lifted] of Object.entries(flags)) {
        const problems = problemsOf({ ...relaxedStack, [flag]: "1" });
        const names = problems.map((p) => p.split(":")[0]);
        for (const name of lifted) expect(names).not.toContain(name);
        // Every other guard still holds.
        expect(names.length).toBe(4 - lifted.length);
      }
      const config = loadConfig({
        ...relaxedStack,
        KEYBROKER_ALLOW_HTTP_ISSUER: "1",
        KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1",
        KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      });
      expect(config.relaxations).toEqual(["http_issuer", "local_keyring", "embedded_database"]);
      expect(loadConfig({ ...production, KEYBROKER_ALLOW_LOOPBACK_PROVIDERS: "1" }).relaxations).toEqual([
        "loopback_providers",
      ]);
    });

    it("L7 keeps http off the network even with KEYBROKER_ALLOW_HTTP_ISSUER=1", () => {
      expect(
        problemsOf({
          ...production,
          KEYBROKER_ALLOW_HTTP_ISSUER: "1",
          AUTH0_ISSUER: "http://auth.example.com/",
        }),
      ).toEqual([expect.stringContaining("AUTH0_ISSUER"), expect.stringContaining("AUTH0_JWKS_URL")]);
    });

    it("L7 refuses a relaxation flag that is neither 0 nor 1", () => {
      expect(problemsOf({ ...production, KEYBROKER_ALLOW_LOCAL_KEYRING: "yes" }).join()).toContain(
        "KEYBROKER_ALLOW_LOCAL_KEYRING",
      );
    });

    it("L7 relaxes everything only in dev mode, and names each relaxation in one warning line", () => {
      const config = loadConfig(relaxedStack, { mode: "development" });
      expect(config.production).toBe(false);
      expect([...config.relaxations].sort()).toEqual(
        ["embedded_database", "http_issuer", "local_keyring", "loopback_providers"].sort(),
      );
      const warnings = relaxationWarnings(config);
      expect(warnings).toHaveLength(4);
      for (const variable of [
        "KEYBROKER_ALLOW_HTTP_ISSUER",
        "KEYBROKER_ALLOW_LOOPBACK_PROVIDERS",
        "KEYBROKER_ALLOW_LOCAL_KEYRING",
        "KEYBROKER_ALLOW_EMBEDDED_DATABASE",
      ]) {
        expect(warnings.filter((w) => w.includes(variable))).toHaveLength(1);
      }
      expect(relaxationWarnings(loadConfig(production))).toEqual([]);
    });

    it("L7 refuses the embedded database for operator commands unless explicitly allowed", () => {
      expect(() => loadDatabaseConfig({ NODE_ENV: "development" })).toThrow(/DATABASE_URL/);
      expect(loadDatabaseConfig({ KEYBROKER_ALLOW_EMBEDDED_DATABASE: "1" }).kind).toBe("pglite");
    });

    it("L7 reads an issuer CA file setting, so a private-CA https issuer needs no relaxation", () => {
      const config = loadConfig({ ...production, KEYBROKER_ISSUER_CA_FILE: "/etc/keybroker/issuer-ca.pem" });
      expect(config.auth.issuerCaFile).toBe("/etc/keybroker/issuer-ca.pem");
      expect(config.relaxations).toEqual([]);
    });
  });
});

describe("listeners (review M3, L5, L6, F3)", () => {
  const tls = { KEYBROKER_TLS_CERT_FILE: "/tls/server.pem", KEYBROKER_TLS_KEY_FILE: "/tls/server.key" };
  const adminMtls = {
    KEYBROKER_ADMIN_TLS_CERT_FILE: "/tls/admin.pem",
    KEYBROKER_ADMIN_TLS_KEY_FILE: "/tls/admin.key",
    KEYBROKER_ADMIN_TLS_CLIENT_CA_FILE: "/tls/operators-ca.pem",
  };

  it("G61 M3: binds every listener to loopback by default, in serve as in dev", () => {
    for (const mode of ["production", "development"] as const) {
      const config = loadConfig(
        mode === "production"
          ? production
          : {
              ...production,
              DATABASE_URL: undefined,
              KEYBROKER_KEYRING: "local",
              KEYBROKER_LOCAL_KEYRING_FILE: "/k",
            },
        { mode },
      );
      expect(config.grpc.host, mode).toBe("127.0.0.1");
      expect(config.connect?.host, mode).toBe("127.0.0.1");
      expect(config.admin?.host, mode).toBe("127.0.0.1");
      expect(config.grpcTls, mode).toBeUndefined();
    }
  });

  it("G61 M3: refuses a plaintext gRPC or Connect listener off loopback in production", () => {
    const problems = problemsOf({ ...production, KEYBROKER_GRPC_HOST: "0.0.0.0" });
    expect(problems.map((p) => p.split(":")[0])).toEqual(["KEYBROKER_GRPC_HOST", "KEYBROKER_CONNECT_HOST"]);
    expect(problems[0]).toContain("KEYBROKER_ALLOW_PLAINTEXT_LISTENERS=mesh-mtls");
    expect(problemsOf({ ...production, KEYBROKER_CONNECT_HOST: "10.0.0.5" })).toHaveLength(1);
  });

  it("G61 M3: accepts them off loopback with TLS on both, or with the explicit mesh-mtls opt-out only", () => {
    const exposed = { ...production, KEYBROKER_GRPC_HOST: "0.0.0.0" };
    expect(loadConfig({ ...exposed, ...tls }).grpcTls).toEqual({
      certFile: "/tls/server.pem",
      keyFile: "/tls/server.key",
    });
    const meshed = loadConfig({ ...exposed, KEYBROKER_ALLOW_PLAINTEXT_LISTENERS: "mesh-mtls" });
    expect(meshed).toMatchObject({ plaintextListeners: "mesh-mtls", grpcTls: undefined });
    expect(problemsOf({ ...exposed, KEYBROKER_ALLOW_PLAINTEXT_LISTENERS: "1" })[0]).toMatch(
      /^KEYBROKER_ALLOW_PLAINTEXT_LISTENERS/,
    );
  });

  it("G68 L6: serves AdminService on its own loopback port by default, or not at all when off", () => {
    expect(loadConfig(production).admin).toEqual({ host: "127.0.0.1", port: 50052, tls: undefined });
    expect(loadConfig({ ...production, KEYBROKER_ADMIN_GRPC_PORT: "off" }).admin).toBeUndefined();
  });

  it("G68 L6: refuses a non-loopback admin listener without mTLS in production, mesh opt-out or not", () => {
    const exposed = { ...production, KEYBROKER_ADMIN_GRPC_HOST: "0.0.0.0" };
    expect(problemsOf(exposed)[0]).toMatch(/^KEYBROKER_ADMIN_GRPC_HOST: .*mTLS/);
    expect(problemsOf({ ...exposed, KEYBROKER_ALLOW_PLAINTEXT_LISTENERS: "mesh-mtls" })).toHaveLength(1);
    const { KEYBROKER_ADMIN_TLS_CLIENT_CA_FILE: _ca, ...serverTlsOnly } = adminMtls;
    expect(problemsOf({ ...exposed, ...serverTlsOnly })[0]).toMatch(/^KEYBROKER_ADMIN_GRPC_HOST/);
    expect(loadConfig({ ...exposed, ...adminMtls }).admin).toEqual({
      host: "0.0.0.0",
      port: 50052,
      tls: { certFile: "/tls/admin.pem", keyFile: "/tls/admin.key", clientCaFile: "/tls/operators-ca.pem" },
    });
  });

  it("G67 L5: caps connections and streams and bounds idle connections and handshakes by default, all configurable", () => {
    expect(loadConfig(production).listenerLimits).toEqual({
      maxConnections: 1_000,
      maxConcurrentStreams: 100,
      idleTimeoutMs: 300_000,
      handshakeTimeoutMs: 10_000,
    });
    const tuned = loadConfig({
      ...production,
      KEYBROKER_MAX_CONNECTIONS: "50",
      KEYBROKER_MAX_CONCURRENT_STREAMS: "8",
      KEYBROKER_CONNECTION_IDLE_TIMEOUT_MS: "60000",
      KEYBROKER_HANDSHAKE_TIMEOUT_MS: "2000",
    });
    expect(tuned.listenerLimits).toEqual({
      maxConnections: 50,
      maxConcurrentStreams: 8,
      idleTimeoutMs: 60_000,
      handshakeTimeoutMs: 2_000,
    });
    expect(problemsOf({ ...production, KEYBROKER_HANDSHAKE_TIMEOUT_MS: "0" })[0]).toMatch(
      /^KEYBROKER_HANDSHAKE_TIMEOUT_MS/,
    );
  });

  it("G73 F3: leaves the receive cap to the provider registry unless KEYBROKER_MAX_RECEIVE_MESSAGE_BYTES sets it", () => {
    expect(loadConfig(production).maxReceiveMessageBytes).toBeUndefined();
    expect(
      loadConfig({ ...production, KEYBROKER_MAX_RECEIVE_MESSAGE_BYTES: "4194304" }).maxReceiveMessageBytes,
    ).toBe(4 * 1024 * 1024);
  });
});
