import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const run = promisify(execFile);
const ROOT = new URL("../..", import.meta.url).pathname;
const BIN = join(ROOT, "bin/keybroker.js");
const BUF = join(ROOT, "node_modules/.bin/buf");

/** The newcomer's path, as README tells it: `npm start`, a dev token, a first call with buf curl. */
describe("keybroker dev (npm start)", () => {
  let dir: string;
  let child: ChildProcess;
  let output = "";
  let callerKey: string;
  let grpcPort: number;
  let exitCode: Promise<number | null>;

  const env = () => ({
    ...process.env,
    NODE_ENV: "development",
    KEYBROKER_DEV_DIR: dir,
    KEYBROKER_GRPC_PORT: "0",
    KEYBROKER_CONNECT_PORT: "off",
    KEYBROKER_ADMIN_GRPC_PORT: "0",
    KEYBROKER_METRICS_PORT: "off",
    KEYBROKER_DEV_ISSUER_PORT: "0",
  });

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "keybroker-dev-"));
    child = spawn(process.execPath, [BIN, "dev"], { env: env(), stdio: ["ignore", "pipe", "pipe"] });
    exitCode = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
    child.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const deadline = Date.now() + 60_000;
    while (!/Dev caller key\s+kbk_/.test(output)) {
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(`dev broker did not start:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    callerKey = /Dev caller key\s+(kbk_\w+)/.exec(output)?.[1] ?? "";
    grpcPort = Number(/gRPC\s+127\.0\.0\.1:(\d+)/.exec(output)?.[1]);
  }, 90_000);

  afterAll(async () => {
    if (child.exitCode === null) child.kill("SIGTERM");
    await exitCode;
    await rm(dir, { recursive: true, force: true });
  });

  it("prints a loud dev-only banner with a caller key and the first call to make", () => {
    expect(output).toContain("DEVELOPMENT ONLY");
    expect(callerKey).toMatch(/^kbk_\w{38}$/);
    expect(output).toContain("dev-token --sub alice");
    expect(output).toContain("buf curl");
  });

  it("issues a dev token and serves PutSecret and ListSecrets to buf curl", async () => {
    const { stdout: token } = await run(process.execPath, [BIN, "dev-token", "--sub", "alice"], {
      env: env(),
    });
    const headers = ["-H", `x-keybroker-key: ${callerKey}`, "-H", `authorization: Bearer ${token.trim()}`];
    const url = `http://127.0.0.1:${grpcPort}/keybroker.v1.SecretService`;
    const put = await run(BUF, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      ...headers,
      "-d",
      JSON.stringify({
        // Kraken declares no key inspection, so storing needs no network (issue 13 item 5).
        provider: "kraken",
        label: "dev",
        fields: { api_key: "ghp_devmode_canary_0123456789", api_secret: "devmode_canary_secret_0001" },
      }),
      `${url}/PutSecret`,
    ]);
    expect(JSON.parse(put.stdout).secret.hint).toBe("…6789");
    const list = await run(BUF, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      ...headers,
      `${url}/ListSecrets`,
    ]);
    expect(JSON.parse(list.stdout).secrets).toHaveLength(1);
    expect(list.stdout).not.toContain("ghp_devmode_canary");
  });

  it("lists its services through reflection", async () => {
    const { stdout } = await run(BUF, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      "--list-services",
      `http://127.0.0.1:${grpcPort}`,
    ]);
    expect(stdout.split("\n")).toEqual(
      expect.arrayContaining([
        "keybroker.v1.SecretService",
        "keybroker.v1.ProxyService",
        "grpc.health.v1.Health",
      ]),
    );
  });

  it("refuses to run with NODE_ENV=production", async () => {
    const failed = await run(process.execPath, [BIN, "dev"], {
      env: { ...env(), NODE_ENV: "production" },
    }).then(
      () => undefined,
      (err: { code?: number; stderr?: string }) => err,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toContain("development-only");
  });

  it("stops cleanly on SIGTERM", async () => {
    child.kill("SIGTERM");
    expect(await exitCode).toBe(0);
    expect(output).toContain("keybroker stopped");
    expect(output).not.toContain("ghp_devmode_canary");
  });
});
