import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { PGlite } from "@electric-sql/pglite";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";

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
    KEYBROKER_CONNECT_PORT: "0",
    KEYBROKER_ADMIN_GRPC_PORT: "0",
    KEYBROKER_METRICS_PORT: "0",
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
    // A fresh directory: tsx start-up and every migration on a cold PGlite; slow on a loaded machine.
    const deadline = Date.now() + 170_000;
    while (!/Dev caller key\s+kbk_/.test(output)) {
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(`dev broker did not start:\n${output}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    callerKey = /Dev caller key\s+(kbk_\w+)/.exec(output)?.[1] ?? "";
    grpcPort = Number(/gRPC\s+127\.0\.0\.1:(\d+)/.exec(output)?.[1]);
  }, 180_000);

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
    // Hers, and the echo provider's secret dev mode seeded for her.
    const listed = JSON.parse(list.stdout).secrets as Array<{ provider: string }>;
    expect(listed.map((s) => s.provider).sort()).toEqual(["dev-echo", "kraken"]);
    expect(list.stdout).not.toContain("ghp_devmode_canary");
  }, 120_000);

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

  /** The commands of the banner between two of its lines, indentation removed. */
  function bannerBlock(from: RegExp, to: RegExp): string {
    const lines = output.split("\n");
    const start = lines.findIndex((l) => from.test(l));
    const end = lines.findIndex((l, i) => i > start && to.test(l));
    return lines
      .slice(start + 1, end)
      .map((l) => l.replace(/^ {4}/, ""))
      .join("\n");
  }

  it("K223 prints a ProxyService call that works as pasted, over gRPC and over Connect, through the echo provider", async () => {
    const setup = bannerBlock(/ready to paste/, /npx buf curl/);
    const grpc = bannerBlock(/KEY=\$\(|export TOKEN=/, /The same call over Connect/);
    const connect = bannerBlock(/The same call over Connect/, /Store a key of your own/);
    expect(setup).toContain(`export KEY=${callerKey}`);
    expect(grpc).toContain("/keybroker.v1.ProxyService/Call");
    expect(connect).toMatch(/^curl -s -H 'content-type: application\/json'/);

    for (const call of [grpc, connect]) {
      // npx and npm resolve from the checkout, as for a user in it.
      const { stdout } = await run("bash", ["-c", `set -e\n${setup}\n${call}`], {
        env: { ...env(), PATH: `${join(ROOT, "node_modules/.bin")}:${process.env.PATH ?? ""}` },
        cwd: ROOT,
      });
      const answer = JSON.parse(stdout) as { status: number; body: string };
      expect(answer.status).toBe(200);
      const echoed = JSON.parse(Buffer.from(answer.body, "base64").toString("utf8"));
      expect(echoed).toMatchObject({
        method: "GET",
        path: "/hello",
        query: { from: "dev" },
        credential: "Bearer credential received (not echoed)",
      });
    }
  }, 180_000);

  it("shows the metrics URL it honours from KEYBROKER_METRICS_PORT, and the example app's command", async () => {
    const url = /Metrics\s+(http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(output)?.[1] ?? "";
    const metrics = await fetch(url);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toContain("keybroker_");
    expect(output).toContain(
      `BROKER_ADDRESS=127.0.0.1:${grpcPort} KEYBROKER_CALLER_KEY=$KEY PORT=3000 npm run example`,
    );
  });

  it("logs for a person, not JSON lines", () => {
    expect(output).toMatch(/^\d\d:\d\d:\d\d\.\d{3} INFO {2}keybroker serving /m);
    expect(output).not.toMatch(/^\{"level"/m);
  });

  it("K213 refuses a second dev process on the same directory, naming the first", async () => {
    const failed = await run(process.execPath, [BIN, "dev"], { env: env() }).then(
      () => undefined,
      (err: { code?: number; stderr?: string }) => err,
    );
    expect(failed?.code).toBe(1);
    expect(failed?.stderr).toContain(`in use by keybroker dev (pid ${child.pid}`);
  }, 90_000);

  it("K219 exits 1 with a clear message when its port is taken, stopping what it started", async () => {
    // Another dev directory (migrated from the suite's template, so no migration wait) and the
    // running broker's gRPC port.
    const other = await mkdtemp(join(tmpdir(), "keybroker-dev-clash-"));
    try {
      await mkdir(other, { recursive: true });
      const template = await readFile(inject("pgliteTemplate"));
      const pglite = await PGlite.create({
        dataDir: join(other, "pgdata"),
        loadDataDir: new Blob([template]),
      });
      await pglite.close();
      const failed = await run(process.execPath, [BIN, "dev"], {
        env: { ...env(), KEYBROKER_DEV_DIR: other, KEYBROKER_GRPC_PORT: String(grpcPort) },
        timeout: 150_000,
      }).then(
        () => undefined,
        (err: { code?: number; signal?: string; stderr?: string }) => err,
      );
      expect(failed?.signal ?? null).toBeNull(); // ended by itself, not by the timeout
      expect(failed?.code).toBe(1);
      expect(failed?.stderr).toContain(
        `the broker cannot listen on 127.0.0.1:${grpcPort}: the port is in use`,
      );
      expect(failed?.stderr).toContain("KEYBROKER_GRPC_PORT");
      expect(existsSync(join(other, "pgdata.lock"))).toBe(false);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  }, 180_000);

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
