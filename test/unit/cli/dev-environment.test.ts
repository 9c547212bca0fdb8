import { readFile } from "node:fs/promises";
import { afterEach, describe, expect, it } from "vitest";
import { devConfigEnv } from "../../../src/cli/dev-config.js";
import {
  DEV_ECHO_PROVIDER_ID,
  type DevEchoUpstream,
  devEchoProvider,
  startDevEchoUpstream,
} from "../../../src/cli/dev-echo-upstream.js";
import { loadConfig, SHIPPED_PROVIDERS_FILE } from "../../../src/config/config.js";
import { createLogger } from "../../../src/log/logger.js";
import { createPrettyDestination, formatLine } from "../../../src/log/pretty-destination.js";
import { parseProviderRegistry } from "../../../src/outbound/provider-registry.js";

const DEV = {
  issuer: "http://127.0.0.1:4455/",
  jwksUrl: "http://127.0.0.1:4455/.well-known/jwks.json",
  providersFile: "/tmp/p.json",
};

describe("keybroker dev's environment", () => {
  it("honours the variables serve reads: ports, metrics, outbound CA, limits", () => {
    const { env, ignored, problems } = devConfigEnv(
      {
        KEYBROKER_DEV_DIR: "/tmp/kb",
        KEYBROKER_GRPC_PORT: "6000",
        KEYBROKER_METRICS_PORT: "9999",
        KEYBROKER_OUTBOUND_CA_FILE: "/etc/ca.pem",
        KEYBROKER_MAX_CONNECTIONS: "7",
      },
      DEV,
    );
    const config = loadConfig(env, { mode: "development" });

    expect(ignored).toEqual([]);
    expect(problems).toEqual([]);
    expect(config.grpc.port).toBe(6000);
    expect(config.ops?.port).toBe(9999);
    expect(config.outboundCaFile).toBe("/etc/ca.pem");
    expect(config.listenerLimits.maxConnections).toBe(7);
    expect(config.providersFile).toBe("/tmp/p.json");
    expect(config.database).toEqual({ kind: "pglite", dataDir: "/tmp/kb/pgdata" });
  });

  it("K218 never uses DATABASE_URL, another keyring or issuer from the shell, and says so", () => {
    const { env, ignored } = devConfigEnv(
      {
        DATABASE_URL: "postgres://app@db/app_production",
        KEYBROKER_KEYRING: "aws-kms",
        AUTH0_ISSUER: "https://tenant.auth0.com/",
      },
      DEV,
    );
    const config = loadConfig(env, { mode: "development" });

    expect(config.database.kind).toBe("pglite");
    expect(config.keyring.kind).toBe("local");
    expect(config.auth.issuer).toBe(DEV.issuer);
    expect(ignored.join("\n")).toMatch(
      /ignores DATABASE_URL[\s\S]*ignores KEYBROKER_KEYRING[\s\S]*ignores AUTH0_ISSUER/,
    );
    expect(ignored.join("\n")).not.toContain("app_production");
  });

  it("K218 refuses a listener host off loopback", () => {
    const { problems } = devConfigEnv(
      { KEYBROKER_GRPC_HOST: "0.0.0.0", KEYBROKER_METRICS_HOST: "localhost" },
      DEV,
    );
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^KEYBROKER_GRPC_HOST: keybroker dev binds loopback only/);
  });
});

describe("the dev echo provider", () => {
  let upstream: DevEchoUpstream | undefined;
  afterEach(async () => {
    await upstream?.close();
  });

  it("K216 is refused by the registry whenever the loopback relaxation is off (serve, production)", () => {
    const registry = { providers: [devEchoProvider(4000)] };

    expect(parseProviderRegistry(registry, { production: false }).get(DEV_ECHO_PROVIDER_ID)).toBeDefined();
    expect(() => parseProviderRegistry(registry, { production: true })).toThrow(
      /allowLoopback is for development and tests only/,
    );
    expect(() => parseProviderRegistry(registry, { production: true })).toThrow(/baseUrl must be https/);
  });

  it("K216 is not in the shipped registry, which holds no loopback provider", async () => {
    const shipped = JSON.parse(await readFile(SHIPPED_PROVIDERS_FILE, "utf8")) as {
      providers: Array<{ id: string; allowLoopback?: boolean }>;
    };
    expect(shipped.providers.map((p) => p.id)).not.toContain(DEV_ECHO_PROVIDER_ID);
    expect(shipped.providers.filter((p) => p.allowLoopback === true)).toEqual([]);
  });

  it("K217 echoes the request but never the credential it was sent", async () => {
    upstream = await startDevEchoUpstream(0);
    const canary = "echo_canary_credential_0123456789";

    const response = await fetch(`http://127.0.0.1:${upstream.port}/v1/things?x=1`, {
      method: "POST",
      headers: { authorization: `Bearer ${canary}`, cookie: `s=${canary}`, "x-trace": "t1" },
      body: "hello",
    });
    const text = await response.text();

    expect(text).not.toContain(canary);
    expect(JSON.parse(text)).toMatchObject({
      method: "POST",
      path: "/v1/things",
      query: { x: "1" },
      headers: { "x-trace": "t1" },
      credential: "Bearer credential received (not echoed)",
      body: "hello",
    });
  });
});

describe("dev logs, human-readable", () => {
  it("K222 print one line per entry, keeping pino's redaction", () => {
    const lines: string[] = [];
    const logger = createLogger({
      level: "info",
      destination: createPrettyDestination({ write: (t) => lines.push(t) }),
    });

    logger.info({ token: "tok_canary_0123456789", port: 5 }, "keybroker serving");

    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}keybroker serving .*port=5/);
    expect(lines[0]).toContain("token=[REDACTED]");
    expect(lines[0]).not.toContain("tok_canary");
  });

  it("passes a line that is not JSON through as it is", () => {
    expect(formatLine("plain text\n")).toBe("plain text");
  });
});
