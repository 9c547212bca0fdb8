import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";
import { fileURLToPath } from "node:url";
import { request } from "undici";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createKeybrokerClient, type KeybrokerClient } from "../../client/keybroker-client.js";
import { createExampleApp, type ExampleAppDeps } from "../../examples/express-app/app.js";
import { type BrokerHarness, startBroker } from "../support/broker-harness.js";
import { findLeaks } from "../support/captured-logs.js";

const ALICE = "google-oauth2|example-app-alice-canary-7170";
const BOB = "facebook|example-app-bob-canary-8180";
const APP_SCRIPT = fileURLToPath(new URL("../../examples/express-app/app.ts", import.meta.url));

interface Answer {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: unknown;
  readonly text: string;
}

/** One running example app on 127.0.0.1:0 with its own broker client. */
interface RunningApp {
  readonly baseUrl: string;
  stop(): Promise<void>;
}

async function startExampleApp(deps: ExampleAppDeps): Promise<RunningApp> {
  const server: Server = createExampleApp(deps).listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

async function send(
  app: RunningApp,
  method: "GET" | "POST" | "DELETE",
  path: string,
  options: { token?: string; body?: unknown; authorization?: string } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  const authorization = options.authorization ?? (options.token && `Bearer ${options.token}`);
  if (authorization) headers.authorization = authorization;
  if (options.body !== undefined) headers["content-type"] = "application/json";
  const response = await request(`${app.baseUrl}${path}`, {
    method,
    headers,
    ...(options.body === undefined ? {} : { body: JSON.stringify(options.body) }),
  });
  const text = await response.body.text();
  const isJson = String(response.headers["content-type"] ?? "").includes("json");
  return {
    status: response.statusCode,
    headers: response.headers,
    text,
    body: isJson ? JSON.parse(text) : text,
  };
}

describe("example Express app in front of the real broker", () => {
  let broker: BrokerHarness;
  let client: KeybrokerClient;
  let app: RunningApp;
  let appKey: string;
  let aliceToken: string;
  let bobToken: string;
  let connectionId: string;
  const answers: string[] = [];
  // What the apps reported as server-side failures: checked for leaks with the answers.
  const logged: string[] = [];
  const logError = (line: string) => {
    logged.push(line);
  };

  beforeAll(async () => {
    broker = await startBroker("pglite");
    appKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call"])).key;
    aliceToken = await broker.tokenFor(ALICE);
    bobToken = await broker.tokenFor(BOB);
    client = createKeybrokerClient({ address: broker.grpcAddress, callerKey: appKey });
    app = await startExampleApp({ broker: client, logError });
  });

  afterAll(async () => {
    await app?.stop();
    client?.close();
    await broker?.close();
  });

  /** `send` against the main app instance, keeping every answer for the leak check. */
  async function call(
    method: "GET" | "POST" | "DELETE",
    path: string,
    options: Parameters<typeof send>[3] = {},
  ) {
    const answer = await send(app, method, path, options);
    answers.push(answer.text, JSON.stringify(answer.headers));
    return answer;
  }

  it("connects a user's key and answers with its metadata, never the key", async () => {
    const answer = await call("POST", "/connections", {
      token: aliceToken,
      body: {
        provider: "test-upstream",
        label: "saas",
        fields: { token: broker.upstreamCredentials.bearer },
      },
    });
    expect(answer.status).toBe(201);
    expect(answer.body).toMatchObject({
      provider: "test-upstream",
      label: "saas",
      version: 1,
      fieldNames: ["token"],
    });
    connectionId = (answer.body as { id: string }).id;
    expect(connectionId).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("lists the user's connections and none of another user's", async () => {
    const alice = await call("GET", "/connections", { token: aliceToken });
    expect(alice.status).toBe(200);
    expect((alice.body as { connections: Array<{ id: string }> }).connections.map((c) => c.id)).toEqual([
      connectionId,
    ]);
    const bob = await call("GET", "/connections", { token: bobToken });
    expect(bob.body).toEqual({ connections: [] });
  });

  it("makes a proxied call for the user and answers the provider's status and JSON body", async () => {
    const answer = await call("POST", `/connections/${connectionId}/call`, {
      token: aliceToken,
      body: { method: "GET", path: "/ok" },
    });
    expect(answer.status).toBe(200);
    expect(answer.body).toMatchObject({ status: 200, body: { ok: true, method: "GET" } });
  });

  it("passes query parameters through to the provider", async () => {
    broker.upstream.reset();
    const answer = await call("POST", `/connections/${connectionId}/call`, {
      token: aliceToken,
      body: { method: "GET", path: "/ok", query: { page: "2" } },
    });
    expect(answer.status).toBe(200);
    expect(broker.upstream.requests[0]?.url).toBe("/bearer/ok?page=2");
  });

  it("answers an echoing provider's response with the key scrubbed", async () => {
    const answer = await call("POST", `/connections/${connectionId}/call`, {
      token: aliceToken,
      body: { method: "GET", path: "/echo" },
    });
    expect(answer.status).toBe(200);
    expect(answer.text).toContain("[REDACTED]");
    expect(findLeaks(answer.text, [broker.upstreamCredentials.bearer])).toEqual([]);
  });

  it("answers 401 with a Bearer challenge when the request carries no user token", async () => {
    for (const authorization of [undefined, "Basic dXNlcjpwYXNz", "Bearer "]) {
      const answer = await call("GET", "/connections", authorization === undefined ? {} : { authorization });
      expect(answer.status, String(authorization)).toBe(401);
      expect(answer.headers["www-authenticate"]).toBe("Bearer");
    }
  });

  it("answers 401 when the broker refuses the user's expired token", async () => {
    const expired = await broker.tokenFor(ALICE, { exp: Math.floor(Date.now() / 1000) - 600 });
    const answer = await call("GET", "/connections", { token: expired });
    expect(answer.status).toBe(401);
    expect(answer.body).toMatchObject({ error: "sign in required" });
    expect((answer.body as { requestId?: string }).requestId).toBeDefined();
  });

  it("answers 404 for another user's connection id, on call and on delete", async () => {
    const used = await call("POST", `/connections/${connectionId}/call`, {
      token: bobToken,
      body: { method: "GET", path: "/ok" },
    });
    expect(used.status).toBe(404);
    const deleted = await call("DELETE", `/connections/${connectionId}`, { token: bobToken });
    expect(deleted.status).toBe(404);
  });

  it("answers 409 for a second connection with the same provider and label", async () => {
    const answer = await call("POST", "/connections", {
      token: aliceToken,
      body: { provider: "test-upstream", label: "saas", fields: { token: "another-value" } },
    });
    expect(answer.status).toBe(409);
  });

  it("answers 400 with the broker's reason for a path outside the provider", async () => {
    const answer = await call("POST", `/connections/${connectionId}/call`, {
      token: aliceToken,
      body: { method: "GET", path: "/../binance/x" },
    });
    expect(answer.status).toBe(400);
    expect((answer.body as { error: string }).error).toMatch(/path/);
  });

  it("answers 400 for a body of the wrong shape or malformed JSON, without echoing it", async () => {
    const wrong = await call("POST", "/connections", {
      token: aliceToken,
      body: { provider: "test-upstream", fields: "CANARY-not-an-object" },
    });
    expect(wrong.status).toBe(400);
    expect(wrong.text).not.toContain("CANARY");
    const malformed = await request(`${app.baseUrl}/connections`, {
      method: "POST",
      headers: { authorization: `Bearer ${aliceToken}`, "content-type": "application/json" },
      body: "{not json",
    });
    expect(malformed.statusCode).toBe(400);
    await malformed.body.dump();
  });

  it("answers 403 when the app's caller key lacks the scope for the route", async () => {
    const readOnly = createKeybrokerClient({
      address: broker.grpcAddress,
      callerKey: (await broker.callerKey(["secrets:read"])).key,
    });
    const readOnlyApp = await startExampleApp({ broker: readOnly, logError });
    try {
      const answer = await send(readOnlyApp, "DELETE", `/connections/${connectionId}`, { token: aliceToken });
      expect(answer.status).toBe(403);
    } finally {
      await readOnlyApp.stop();
      readOnly.close();
    }
  });

  it("answers 500, not 401, when the app's own caller key is revoked: users are not sent to log in", async () => {
    const revoked = await broker.callerKey(["secrets:read"]);
    await broker.revokeCallerKey(revoked.id);
    const revokedClient = createKeybrokerClient({ address: broker.grpcAddress, callerKey: revoked.key });
    const revokedApp = await startExampleApp({ broker: revokedClient, logError });
    try {
      const answer = await send(revokedApp, "GET", "/connections", { token: aliceToken });
      expect(answer.status).toBe(500);
      expect(logged.at(-1)).toMatch(/caller_key refused\) request [0-9a-f-]{36}$/);
      expect(findLeaks(answer.text + logged.join("\n"), [revoked.key, aliceToken])).toEqual([]);
    } finally {
      await revokedApp.stop();
      revokedClient.close();
    }
  });

  it("answers 504 with an outcome-unknown warning when the provider hangs past the deadline", async () => {
    const impatient = createKeybrokerClient({
      address: broker.grpcAddress,
      callerKey: appKey,
      defaultDeadlineMs: 300,
    });
    const impatientApp = await startExampleApp({ broker: impatient, logError });
    try {
      const answer = await send(impatientApp, "POST", `/connections/${connectionId}/call`, {
        token: aliceToken,
        body: { method: "GET", path: "/hang" },
      });
      expect(answer.status).toBe(504);
      expect((answer.body as { error: string }).error).toMatch(/may have been carried out/);
    } finally {
      await impatientApp.stop();
      impatient.close();
    }
  });

  it("answers 401 when its own verifyUser rejects a token the broker would accept", async () => {
    const checked: string[] = [];
    const strictApp = await startExampleApp({
      broker: client,
      logError,
      verifyUser: async (token) => {
        checked.push(token);
        return false;
      },
    });
    try {
      const answer = await send(strictApp, "GET", "/connections", { token: aliceToken });
      expect(answer.status).toBe(401);
      expect(checked).toEqual([aliceToken]);
    } finally {
      await strictApp.stop();
    }
  });

  it("deletes a connection, after which it is gone", async () => {
    const deleted = await call("DELETE", `/connections/${connectionId}`, { token: aliceToken });
    expect(deleted.status).toBe(204);
    expect((await call("GET", "/connections", { token: aliceToken })).body).toEqual({ connections: [] });
    expect((await call("DELETE", `/connections/${connectionId}`, { token: aliceToken })).status).toBe(404);
  });

  describe("started from the command line", () => {
    let child: ChildProcess | undefined;

    afterAll(() => {
      child?.kill("SIGTERM");
    });

    it("refuses to start without its settings, naming each missing one", async () => {
      const { code, output } = await runScript({});
      expect(code).toBe(1);
      expect(output).toContain("missing environment variables: BROKER_ADDRESS, KEYBROKER_CALLER_KEY");
    });

    it("serves the routes on the port it prints, using BROKER_ADDRESS and KEYBROKER_CALLER_KEY", async () => {
      const key = (await broker.callerKey(["secrets:read"])).key;
      child = spawn(process.execPath, ["--import", "tsx", APP_SCRIPT], {
        env: { ...process.env, BROKER_ADDRESS: broker.grpcAddress, KEYBROKER_CALLER_KEY: key, PORT: "0" },
        stdio: ["ignore", "pipe", "pipe"],
      });
      const baseUrl = await listeningUrl(child);
      const answer = await send({ baseUrl, stop: async () => {} }, "GET", "/connections", {
        token: await broker.tokenFor(ALICE),
      });
      expect(answer.status).toBe(200);
      expect(answer.body).toEqual({ connections: [] });
      child.kill("SIGTERM");
      const [exitCode] = (await once(child, "exit")) as [number | null];
      expect(exitCode).toBe(0);
      child = undefined;
    });
  });

  it("never put a user's key, token or the caller key in any answer", () => {
    expect(answers.length).toBeGreaterThan(20);
    const everything = [...answers, ...logged].join("\n");
    expect(findLeaks(everything, [broker.upstreamCredentials.bearer, aliceToken, bobToken, appKey])).toEqual(
      [],
    );
  });
});

/** Runs the script to completion (bounded) and returns its exit code and combined output. */
async function runScript(env: Record<string, string>): Promise<{ code: number | null; output: string }> {
  const { BROKER_ADDRESS: _a, KEYBROKER_CALLER_KEY: _k, PORT: _p, ...inherited } = process.env;
  const proc = spawn(process.execPath, ["--import", "tsx", APP_SCRIPT], {
    env: { ...inherited, ...env },
    stdio: ["ignore", "pipe", "pipe"],
    timeout: 15_000,
  });
  let output = "";
  proc.stdout.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  proc.stderr.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const [code] = (await once(proc, "exit")) as [number | null];
  return { code, output };
}

/** Waits (bounded) for the app's "listening on URL" line. */
async function listeningUrl(proc: ChildProcess): Promise<string> {
  let output = "";
  const found = new Promise<string>((resolve, reject) => {
    proc.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (match?.[1]) resolve(match[1]);
    });
    proc.once("exit", (code) => reject(new Error(`example app exited with ${code}`)));
  });
  const timeout = new Promise<never>((_, reject) => {
    setTimeout(() => reject(new Error("example app did not start within 15 s")), 15_000).unref();
  });
  return Promise.race([found, timeout]);
}
