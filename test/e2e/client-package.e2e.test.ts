import { execFile } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { installScratchProject, npmPack } from "../support/scratch-project.js";

const run = promisify(execFile);
const REPO = resolve(import.meta.dirname, "../..");
const ALICE = "google-oauth2|client-package-alice-canary-7171";

/**
 * The script an app would write, the same in both module systems: a stored key, a listing, a
 * proxied call, then two refusals — a bad user token and an unknown caller key — reported as
 * what the app can see of each error. Only the import line differs (ESM `import`, CJS `require`).
 */
const SCRIPT_BODY = `
const { BROKER_ADDRESS, CALLER_KEY, USER_TOKEN, UPSTREAM_TOKEN, LABEL } = process.env;
const describeError = (err) => ({
  name: err.name,
  typed: err instanceof UnauthenticatedError,
  base: err instanceof KeybrokerError,
  code: err.code,
  reason: err.reason,
  credential: err.credential,
  hasRequestId: typeof err.requestId === "string",
  inspected: inspect(err) + JSON.stringify(err) + String(err.stack),
});
async function main() {
  const client = createKeybrokerClient({
    address: BROKER_ADDRESS,
    callerKey: CALLER_KEY,
    defaultDeadlineMs: 15000,
    retry: { maxAttempts: 2 },
  });
  const stranger = createKeybrokerClient({ address: BROKER_ADDRESS, callerKey: "kbk_unknown_caller_key_0000" });
  const result = {};
  try {
    const stored = await client.putSecret(USER_TOKEN, { provider: "test-upstream", label: LABEL, fields: { token: UPSTREAM_TOKEN } });
    result.createdAtIsDate = stored.createdAt instanceof Date;
    result.labels = (await client.listSecrets(USER_TOKEN)).map((secret) => secret.label);
    const response = await client.call(USER_TOKEN, { secretId: stored.id, method: "GET", path: "/ok" });
    result.upstream = { status: response.status, body: Buffer.from(response.body).toString("utf8") };
    result.badToken = await client.listSecrets("not-a-jwt").then(() => null, describeError);
    result.badKey = await stranger.listSecrets(USER_TOKEN).then(() => null, describeError);
  } finally {
    client.close();
    stranger.close();
  }
  console.log(JSON.stringify(result));
}
main().catch((err) => { console.error(err); process.exit(1); });
`;

const ESM_SCRIPT = `import { inspect } from "node:util";
import { createKeybrokerClient, KeybrokerError, UnauthenticatedError } from "@keybroker/client";
${SCRIPT_BODY}`;

const CJS_SCRIPT = `"use strict";
const { inspect } = require("node:util");
const { createKeybrokerClient, KeybrokerError, UnauthenticatedError } = require("@keybroker/client");
${SCRIPT_BODY}`;

/** TypeScript users of both module systems: the declarations must resolve and type the API. */
const TS_ESM = `import { createKeybrokerClient, type KeybrokerClient, UnauthenticatedError } from "@keybroker/client";
import { CallRequestSchema } from "@keybroker/client/messages";
const client: KeybrokerClient = createKeybrokerClient({ address: "127.0.0.1:1", callerKey: "k", loadBalancing: "round_robin" });
export async function labels(token: string): Promise<string[]> {
  try {
    return (await client.listSecrets(token)).map((secret) => secret.label);
  } catch (err) {
    if (err instanceof UnauthenticatedError) return [err.credential, err.reason ?? "none"];
    throw err;
  }
}
export const typeName: string = CallRequestSchema.typeName;
`;
const TS_CJS = `import keybroker = require("@keybroker/client");
const client: keybroker.KeybrokerClient = keybroker.createKeybrokerClient({ address: "127.0.0.1:1", callerKey: "k", retry: { maxAttempts: 2 } });
export const deadline: Promise<keybroker.SecretInfo[]> = client.listSecrets("t", {}, { deadlineMs: 10 });
`;

interface ErrorSeen {
  readonly name: string;
  readonly typed: boolean;
  readonly base: boolean;
  readonly code: string;
  readonly reason: string | undefined;
  readonly credential: string | undefined;
  readonly hasRequestId: boolean;
  readonly inspected: string;
}

interface ScriptResult {
  readonly createdAtIsDate: boolean;
  readonly labels: string[];
  readonly upstream: { readonly status: number; readonly body: string };
  readonly badToken: ErrorSeen | null;
  readonly badKey: ErrorSeen | null;
}

describe("@keybroker/client packed, installed into a plain JavaScript app, against a running broker", () => {
  let broker: BrokerHarness;
  let workDir: string;
  let appDir: string;
  let callerKey: string;
  let userToken: string;

  beforeAll(async () => {
    workDir = mkdtempSync(join(tmpdir(), "keybroker-client-package-"));
    appDir = join(workDir, "app");
    mkdirSync(appDir);
    const packageDir = join(workDir, "package");
    // Build, pack and install in child processes while the broker starts: both take seconds.
    const installed = (async () => {
      await run(join(REPO, "node_modules/.bin/tsx"), ["client/build.ts", join(packageDir, "dist")], {
        cwd: REPO,
      });
      copyFileSync(join(REPO, "client/package.json"), join(packageDir, "package.json"));
      copyFileSync(join(REPO, "client/README.md"), join(packageDir, "README.md"));
      const tarball = await npmPack(packageDir, workDir);
      await installScratchProject(appDir, tarball, join(REPO, "package-lock.json"));
    })();
    const started = startBroker("pglite");
    // Both settle before either failure is thrown, so nothing is left running unobserved.
    const [install, harness] = await Promise.allSettled([installed, started]);
    if (harness.status === "fulfilled") broker = harness.value;
    if (install.status === "rejected") throw install.reason;
    if (harness.status === "rejected") throw harness.reason;
    callerKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    userToken = await broker.tokenFor(ALICE);
    writeFileSync(join(appDir, "app.mjs"), ESM_SCRIPT);
    writeFileSync(join(appDir, "app.cjs"), CJS_SCRIPT);
  }, 240_000);

  afterAll(async () => {
    await broker?.close();
    if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true });
  });

  /** Runs one script of the app under plain Node (no tsx, no loader) and parses its report. */
  async function runApp(script: string, label: string): Promise<{ result: ScriptResult; output: string }> {
    const { stdout, stderr } = await run(process.execPath, [script], {
      cwd: appDir,
      env: {
        PATH: process.env.PATH ?? "",
        BROKER_ADDRESS: broker.grpcAddress,
        CALLER_KEY: callerKey,
        USER_TOKEN: userToken,
        UPSTREAM_TOKEN: broker.upstreamCredentials.bearer,
        LABEL: label,
      },
      timeout: 60_000,
    });
    return { result: JSON.parse(stdout) as ScriptResult, output: stdout + stderr };
  }

  for (const [format, script] of [
    ["ESM (import)", "app.mjs"],
    ["CommonJS (require)", "app.cjs"],
  ] as const) {
    it(`K200 ${format}: calls succeed, and refusals are typed errors read from the ErrorInfo detail that carry neither the token nor the caller key`, async () => {
      const label = `from-${script}`;
      const { result, output } = await runApp(script, label);

      expect(result.createdAtIsDate).toBe(true);
      expect(result.labels).toContain(label);
      expect(result.upstream.status).toBe(200);
      expect(JSON.parse(result.upstream.body)).toEqual({ ok: true, method: "GET" });

      expect(result.badToken).toMatchObject({
        name: "UnauthenticatedError",
        typed: true,
        base: true,
        code: "UNAUTHENTICATED",
        credential: "user_token",
        reason: "token_malformed",
        hasRequestId: true,
      });
      expect(result.badKey).toMatchObject({
        name: "UnauthenticatedError",
        typed: true,
        code: "UNAUTHENTICATED",
        credential: "caller_key",
        reason: "caller_key_invalid",
      });
      // Everything the app printed, errors inspected and serialised included.
      for (const secret of [callerKey, userToken, broker.upstreamCredentials.bearer]) {
        expect(output).not.toContain(secret);
      }
      expect(output).not.toContain("kbk_unknown_caller_key_0000");
    });
  }

  it("its type declarations type-check an ESM and a CommonJS TypeScript consumer", async () => {
    writeFileSync(join(appDir, "consumer.mts"), TS_ESM);
    writeFileSync(join(appDir, "consumer.cts"), TS_CJS);
    writeFileSync(
      join(appDir, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          module: "nodenext",
          target: "es2022",
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: [],
        },
        files: ["consumer.mts", "consumer.cts"],
      }),
    );
    const tsc = join(REPO, "node_modules/typescript/bin/tsc");
    const checked = await run(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: appDir }).then(
      () => "ok",
      (err: { stdout?: string }) => err.stdout ?? String(err),
    );
    expect(checked).toBe("ok");
  });
});
