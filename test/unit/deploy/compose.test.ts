import { beforeAll, describe, expect, it } from "vitest";
import { envSchema, loadConfig, loadDatabaseConfig } from "../../../src/config/config.js";
import {
  asArray,
  asObject,
  asString,
  at,
  composeConfig,
  composeService,
  durationMs,
  environmentOf,
  healthcheckDisabled,
  type JsonObject,
  mountsOf,
  parseYamlDocuments,
  portsOf,
  RUNTIME_VARIABLES,
  readRepoFile,
} from "./deploy-files.js";

const LONG_RUNNING = ["postgres", "local-kms", "mock-oauth2", "edge", "broker"];
const ONE_SHOTS = ["dev-ca", "migrate"];

let model: JsonObject;
let broker: JsonObject;
let brokerEnv: Record<string, string>;

beforeAll(() => {
  // Fails (never skips) when no compose binary is installed: CI must provide one.
  model = composeConfig("docker-compose.yml");
  broker = composeService(model, "broker");
  brokerEnv = environmentOf(broker);
});

function dependency(service: JsonObject, on: string): string | undefined {
  const condition = at(service, "depends_on", on, "condition");
  return typeof condition === "string" ? condition : undefined;
}

describe("docker-compose.yml", () => {
  it("is accepted by `docker compose config` and defines the whole stack", () => {
    const services = Object.keys(asObject(model.services, "services")).sort();
    expect(services).toEqual([...LONG_RUNNING, ...ONE_SHOTS].sort());
  });

  it("sets only variables of envSchema (or ones Node and the AWS SDK read) on broker and migrate", () => {
    const known = new Set(Object.keys(envSchema.shape));
    for (const name of ["broker", "migrate"]) {
      const unknown = Object.keys(environmentOf(composeService(model, name))).filter(
        (key) => !known.has(key) && !(key in RUNTIME_VARIABLES),
      );
      expect(unknown, `${name} sets variables the broker does not know`).toEqual([]);
    }
  });

  it("keeps the runtime-variable allowance free of broker configuration", () => {
    const known = new Set(Object.keys(envSchema.shape));
    expect(Object.keys(RUNTIME_VARIABLES).filter((key) => known.has(key))).toEqual([]);
  });

  it("gives the broker a configuration loadConfig accepts for production: KMS, Postgres, https issuer", () => {
    const config = loadConfig(brokerEnv);
    expect(config.production).toBe(true);
    expect(config.keyring).toMatchObject({ kind: "aws-kms", endpoint: "http://local-kms:8080" });
    expect(config.database.kind).toBe("postgres");
    expect(new URL(config.auth.issuer).protocol).toBe("https:");
    expect(new URL(config.auth.jwksUrl).protocol).toBe("https:");
  });

  it("runs `migrate` on the broker's image with a production database configuration", () => {
    const migrate = composeService(model, "migrate");
    expect(migrate.command).toEqual(["migrate"]);
    expect(migrate.image).toBe(broker.image);
    const env = environmentOf(migrate);
    expect(env.NODE_ENV).toBe("production");
    const database = loadDatabaseConfig(env);
    expect(database.kind).toBe("postgres");
    // M1: the same database, but migrate connects as the owner and the broker as the runtime role
    // migrate grants to.
    const owner = new URL(database.kind === "postgres" ? database.url.unwrap() : "");
    const runtime = new URL(brokerEnv.DATABASE_URL ?? "");
    expect(`${runtime.host}${runtime.pathname}`).toBe(`${owner.host}${owner.pathname}`);
    expect(runtime.username).not.toBe(owner.username);
    expect(env.KEYBROKER_RUNTIME_DB_ROLE).toBe(runtime.username);
    expect(dependency(migrate, "postgres")).toBe("service_healthy");
  });

  it("G59 creates the broker's runtime role in a Postgres init hook, with the password the broker uses", () => {
    const postgres = composeService(model, "postgres");
    const hook = mountsOf(postgres).find((m) => m.target.startsWith("/docker-entrypoint-initdb.d/"));
    expect(hook?.source.endsWith("deploy/compose/postgres/init-runtime-role.sql")).toBe(true);
    const runtime = new URL(brokerEnv.DATABASE_URL ?? "");
    expect(readRepoFile("deploy/compose/postgres/init-runtime-role.sql")).toContain(
      `create role ${runtime.username} login password '${decodeURIComponent(runtime.password)}'`,
    );
  });

  it("starts the broker only after migrate completed and its dependencies are healthy", () => {
    expect(broker.command).toEqual(["serve"]);
    expect(dependency(broker, "migrate")).toBe("service_completed_successfully");
    expect(dependency(broker, "dev-ca")).toBe("service_completed_successfully");
    for (const name of ["postgres", "local-kms", "edge"]) {
      expect(dependency(broker, name), `broker -> ${name}`).toBe("service_healthy");
    }
  });

  it("health-checks every long-running service and leaves one-shots to their exit status", () => {
    for (const name of LONG_RUNNING) {
      const service = composeService(model, name);
      expect(healthcheckDisabled(service), name).toBe(false);
      expect(asArray(at(service, "healthcheck", "test"), `${name} healthcheck`).length, name).toBeGreaterThan(
        1,
      );
    }
    for (const name of ONE_SHOTS) {
      const service = composeService(model, name);
      expect(service.restart, name).toBe("no");
      expect(at(service, "healthcheck") === undefined || healthcheckDisabled(service), name).toBe(true);
    }
  });

  it("checks the broker's health through grpc.health.v1 (deploy/healthcheck.mjs)", () => {
    expect(at(broker, "healthcheck", "test")).toEqual(["CMD", "node", "/app/deploy/healthcheck.mjs"]);
  });

  it("configures the mock issuer to sign tokens with the broker's issuer, audience and permission", () => {
    const issuer = new URL(asString(brokerEnv.AUTH0_ISSUER, "AUTH0_ISSUER"));
    const mock = asObject(JSON.parse(readRepoFile("deploy/compose/mock-oauth2/config.json")), "mock config");
    const callbacks = asArray(mock.tokenCallbacks, "tokenCallbacks");
    const callback = callbacks
      .map((c) => asObject(c, "callback"))
      .find((c) => `/${c.issuerId}` === issuer.pathname);
    expect(callback, `a token callback for issuer id ${issuer.pathname}`).toBeDefined();
    const claims = asObject(at(callback, "requestMappings", 0, "claims"), "claims");
    expect(claims.aud).toContain(brokerEnv.AUTH0_AUDIENCE);
    expect(claims.permissions).toContain(brokerEnv.AUTH0_REQUIRED_PERMISSION);
    expect(claims.sub, "sub must come from the user name, not be fixed").toBeUndefined();
    // mock-oauth2-server serves the keys of issuer id X at /X/jwks.
    expect(brokerEnv.AUTH0_JWKS_URL).toBe(`${issuer.origin}${issuer.pathname}/jwks`);
  });

  it("serves the issuer over TLS under a name the broker resolves to the edge", () => {
    const host = new URL(asString(brokerEnv.AUTH0_ISSUER, "AUTH0_ISSUER")).hostname;
    expect(at(composeService(model, "edge"), "networks", "default", "aliases")).toContain(host);
    const caddyfile = readRepoFile("deploy/compose/edge/Caddyfile");
    const site = new RegExp(
      `^${host.replaceAll(".", "\\.")} \\{\\s*reverse_proxy mock-oauth2:8080\\s*\\}`,
      "m",
    );
    expect(caddyfile).toMatch(site);
  });

  it("trusts the dev CA through a read-only copy of its root certificate, never the CA's keys", () => {
    const caFile = brokerEnv.NODE_EXTRA_CA_CERTS ?? "";
    const mounts = mountsOf(broker);
    const caMount = mounts.find((m) => caFile.startsWith(`${m.target}/`));
    expect(caMount).toMatchObject({ source: "dev-ca", readOnly: true });
    expect(mountsOf(composeService(model, "dev-ca")).map((m) => m.source)).toContain("dev-ca");
    expect(
      mounts.map((m) => m.source),
      "edge-data holds the CA's private keys",
    ).not.toContain("edge-data");
  });

  it("K238 seeds local-kms with the broker's master key and checkpoint HMAC key under the configured aliases", () => {
    const kms = composeService(model, "local-kms");
    expect(String(kms.image)).toMatch(/^nsmithuk\/local-kms:\d+\.\d+\.\d+/);
    const env = environmentOf(kms);
    // local-kms names keys by ARN, with its region in them: the broker must ask in the same one.
    expect(brokerEnv.AWS_REGION).toBe(env.KMS_REGION);
    const endpoint = new URL(brokerEnv.KEYBROKER_KMS_ENDPOINT ?? "");
    expect(endpoint.hostname).toBe("local-kms");
    expect(endpoint.port).toBe(env.PORT);

    const seedMount = mountsOf(kms).find((m) => m.target === env.KMS_SEED_PATH);
    expect(seedMount?.source.endsWith("deploy/compose/local-kms/seed.yaml")).toBe(true);
    const seed = asObject(
      parseYamlDocuments(readRepoFile("deploy/compose/local-kms/seed.yaml"))[0] ?? null,
      "seed",
    );
    const keysOf = (kind: "Aes" | "Hmac") =>
      asArray(at(seed, "Keys", "Symmetric", kind), `${kind} keys`).map((k) => asObject(k, "key"));
    const aliasTarget = (name: string) =>
      asArray(seed.Aliases, "Aliases")
        .map((a) => asObject(a, "alias"))
        .find((a) => a.AliasName === name)?.TargetKeyId;

    const [master] = keysOf("Aes");
    expect(brokerEnv.KEYBROKER_KMS_KEY_ID).toBe("alias/keybroker");
    expect(aliasTarget("alias/keybroker")).toBe(at(master ?? {}, "Metadata", "KeyId"));
    // M1: the checkpoint MAC key, an HMAC_256 key, under the alias the broker is configured with.
    const [mac] = keysOf("Hmac");
    expect(at(mac ?? {}, "Metadata", "KeySpec")).toBe("HMAC_256");
    expect(brokerEnv.KEYBROKER_AUDIT_CHECKPOINT_KEY_ID).toBe("alias/keybroker-audit-checkpoints");
    expect(aliasTarget("alias/keybroker-audit-checkpoints")).toBe(at(mac ?? {}, "Metadata", "KeyId"));
    // Backing keys are 32 bytes of hex (AES-256, HMAC_256): local-kms refuses any other length.
    for (const key of [master, mac]) {
      for (const material of asArray(key?.BackingKeys, "BackingKeys")) {
        expect(String(material)).toMatch(/^[0-9a-f]{64}$/);
      }
    }
    // Keys survive a recreated container: the data directory is a named volume.
    expect(mountsOf(kms).find((m) => m.target === env.KMS_DATA_PATH)?.source).toBe("kms-data");
  });

  it("runs the broker hardened and lets it drain before the stop timeout", () => {
    expect(broker.read_only).toBe(true);
    expect(broker.cap_drop).toContain("ALL");
    expect(broker.security_opt).toContain("no-new-privileges:true");
    const graceMs = Number(brokerEnv.KEYBROKER_SHUTDOWN_GRACE_MS);
    expect(durationMs(broker.stop_grace_period)).toBeGreaterThan(graceMs);
  });

  it("publishes ports on the loopback interface only", () => {
    for (const name of LONG_RUNNING) {
      for (const port of portsOf(composeService(model, name))) {
        expect(port.hostIp, `${name} publishes ${port.published}`).toBe("127.0.0.1");
      }
    }
  });
});
