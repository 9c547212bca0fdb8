import { spawn } from "node:child_process";
import type { DescMethod, DescMethodUnary } from "@bufbuild/protobuf";
import { createConnectTransport } from "@connectrpc/connect-node";
import { Client, credentials, Metadata } from "@grpc/grpc-js";
import { ECHO_METHOD_PATH, echoServiceDesc, encodeEchoMessage } from "./echo-service.js";

const ROOT = new URL("../..", import.meta.url).pathname;

/** bench/tools/echo-server.ts as a child process, with one client per transport. */
export interface EchoProcess {
  readonly pid: number;
  /** One echo call through grpc-js, as the main app's client would make it. */
  grpc(): Promise<unknown>;
  /** One echo call through a Connect client (HTTP/2). */
  connect(): Promise<unknown>;
  stop(): Promise<void>;
}

/** `cpu` pins the echo server (all its threads) with taskset, as the bench pins the broker. */
export async function startEchoProcess(options: { cpu?: number } = {}): Promise<EchoProcess> {
  const command = [process.execPath, "--import", "tsx", `${ROOT}bench/tools/echo-server.ts`];
  const pinned = options.cpu === undefined ? command : ["taskset", "-c", String(options.cpu), ...command];
  const child = spawn(pinned[0] as string, pinned.slice(1), {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const ports = await new Promise<{ grpcPort: number; connectPort: number }>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`echo server did not start:\n${out}`)), 30_000);
    child.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const match = /\{"grpcPort":\d+,"connectPort":\d+\}/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve(JSON.parse(match[0]) as { grpcPort: number; connectPort: number });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`echo server exited with ${code}:\n${out}`));
    });
  });

  const raw = new Client(`127.0.0.1:${ports.grpcPort}`, credentials.createInsecure());
  const request = encodeEchoMessage(Buffer.from("ping"));
  const identity = (b: Buffer) => b;
  const service = echoServiceDesc();
  const method = service.methods[0];
  if (method === undefined || !isUnary(method)) throw new Error("echo descriptor has no unary method");
  const transport = createConnectTransport({
    baseUrl: `http://127.0.0.1:${ports.connectPort}`,
    httpVersion: "2",
  });
  const payload = new Uint8Array(Buffer.from("ping"));

  return {
    pid: child.pid ?? 0,
    grpc: () =>
      new Promise((resolve, reject) =>
        raw.makeUnaryRequest(ECHO_METHOD_PATH, identity, identity, request, new Metadata(), {}, (err, res) =>
          err ? reject(err) : resolve(res),
        ),
      ),
    // The descriptor is built at run time, so the call goes through the transport, untyped.
    connect: () => transport.unary(method, undefined, undefined, undefined, { payload }),
    async stop() {
      raw.close();
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

function isUnary(method: DescMethod): method is DescMethodUnary {
  return method.methodKind === "unary";
}
