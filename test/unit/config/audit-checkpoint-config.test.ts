import { describe, expect, it } from "vitest";
import {
  ConfigError,
  loadAuditVerifyConfig,
  loadConfig,
  loadRuntimeRole,
} from "../../../src/config/config.js";

const production = {
  DATABASE_URL: "postgres://keybroker_runtime:s3cret@db.internal:5432/keybroker",
  KEYBROKER_KEYRING: "aws-kms",
  KEYBROKER_KMS_KEY_ID: "alias/keybroker",
  AWS_REGION: "eu-west-1",
  AUTH0_ISSUER: "https://tenant.eu.auth0.com/",
  AUTH0_AUDIENCE: "https://keybroker.example.com/api",
  AUTH0_REQUIRED_PERMISSION: "keybroker:use",
};

function problemsOf(load: () => unknown): string[] {
  try {
    load();
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems];
    throw err;
  }
  throw new Error("expected a ConfigError");
}

describe("audit checkpoint and runtime role configuration (M1)", () => {
  it("G59 signs checkpoints with the named HMAC KMS key, every 10 s or 10,000 rows, exported to the log by default", () => {
    const config = loadConfig({ ...production, KEYBROKER_AUDIT_CHECKPOINT_KEY_ID: "alias/keybroker-audit" });
    expect(config.auditCheckpoints).toEqual({
      key: {
        kind: "aws-kms",
        keyId: "alias/keybroker-audit",
        region: "eu-west-1",
        endpoint: undefined,
        maxAttempts: 3,
        attemptTimeoutMs: 2_000,
      },
      intervalMs: 10_000,
      rows: 10_000,
      exportToLog: true,
    });
  });

  it("G59 has no checkpoint key with aws-kms unless one is named, and derives one from the local keyring file", () => {
    expect(loadConfig(production).auditCheckpoints.key).toBeUndefined();
    const local = loadConfig({
      ...production,
      KEYBROKER_KEYRING: "local",
      KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
      KEYBROKER_LOCAL_KEYRING_FILE: "/tmp/keyring.json",
    });
    expect(local.auditCheckpoints.key).toEqual({ kind: "local", file: "/tmp/keyring.json" });
  });

  it("G59 refuses a KMS checkpoint key beside the local keyring, and a checkpoint interval out of range", () => {
    expect(
      problemsOf(() =>
        loadConfig({
          ...production,
          KEYBROKER_KEYRING: "local",
          KEYBROKER_ALLOW_LOCAL_KEYRING: "1",
          KEYBROKER_LOCAL_KEYRING_FILE: "/tmp/keyring.json",
          KEYBROKER_AUDIT_CHECKPOINT_KEY_ID: "alias/keybroker-audit",
        }),
      ),
    ).toEqual([expect.stringMatching(/^KEYBROKER_AUDIT_CHECKPOINT_KEY_ID:/)]);
    expect(
      problemsOf(() => loadConfig({ ...production, KEYBROKER_AUDIT_CHECKPOINT_INTERVAL_MS: "0" })),
    ).toEqual([expect.stringMatching(/^KEYBROKER_AUDIT_CHECKPOINT_INTERVAL_MS:/)]);
  });

  it("G59 lets audit verify check checkpoints only with a keyring, and never the local one unrelaxed", () => {
    expect(loadAuditVerifyConfig({ DATABASE_URL: production.DATABASE_URL }).checkpointKey).toBeUndefined();
    expect(
      loadAuditVerifyConfig({ ...production, KEYBROKER_AUDIT_CHECKPOINT_KEY_ID: "alias/a" }).checkpointKey,
    ).toMatchObject({ kind: "aws-kms", keyId: "alias/a" });
    expect(
      problemsOf(() =>
        loadAuditVerifyConfig({
          DATABASE_URL: production.DATABASE_URL,
          KEYBROKER_KEYRING: "local",
          KEYBROKER_LOCAL_KEYRING_FILE: "/tmp/keyring.json",
        }),
      ),
    ).toEqual([expect.stringMatching(/^KEYBROKER_KEYRING:/)]);
  });

  it("G59 takes the runtime role as a plain identifier only: it is spliced into GRANT", () => {
    expect(loadRuntimeRole({})).toBeUndefined();
    expect(loadRuntimeRole({ KEYBROKER_RUNTIME_DB_ROLE: "keybroker_runtime" })).toBe("keybroker_runtime");
    for (const bad of ["Keybroker", "kb; drop table audit_events", 'kb"x', "1kb", ""]) {
      expect(problemsOf(() => loadRuntimeRole({ KEYBROKER_RUNTIME_DB_ROLE: bad }))).toEqual([
        expect.stringMatching(/^KEYBROKER_RUNTIME_DB_ROLE:/),
      ]);
    }
  });
});
