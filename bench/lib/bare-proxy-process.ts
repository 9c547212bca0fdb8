import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { BrokerProcess } from "./broker-process.js";

const ROOT = new URL("../..", import.meta.url).pathname;

/** bench/tools/bare-proxy-server.ts as a child process, aimed at a broker's upstream. */
export interface BareProxyProcess {
  readonly pid: number;
  readonly grpcAddress: string;
  readonly connectUrl: string;
  stop(): Promise<void>;
}

/** `cpu` pins it (all its threads) with taskset, as the bench pins the broker and the echo. */
export async function startBareProxyProcess(
  broker: Pick<BrokerProcess, "upstream" | "upstreamCredentials">,
  options: { cpu?: number } = {},
): Promise<BareProxyProcess> {
  const dir = await mkdtemp(join(tmpdir(), "keybroker-bare-"));
  const caFile = join(dir, "ca.pem");
  await writeFile(caFile, broker.upstream.ca);
  const command = [process.execPath, "--import", "tsx", `${ROOT}bench/tools/bare-proxy-server.ts`];
  const pinned = options.cpu === undefined ? command : ["taskset", "-c", String(options.cpu), ...command];
  const child = spawn(pinned[0] as string, pinned.slice(1), {
    cwd: ROOT,
    stdio: ["ignore", "pipe", "inherit"],
    env: {
      ...process.env,
      BARE_UPSTREAM_ORIGIN: `https://127.0.0.1:${broker.upstream.port}`,
      BARE_UPSTREAM_PATH_PREFIX: "/bearer",
      BARE_UPSTREAM_BEARER: broker.upstreamCredentials.bearer,
      BARE_UPSTREAM_CA_FILE: caFile,
    },
  });
  const ports = await new Promise<{ grpcPort: number; connectPort: number }>((resolve, reject) => {
    let out = "";
    const timer = setTimeout(() => reject(new Error(`bare proxy did not start:\n${out}`)), 30_000);
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
      reject(new Error(`bare proxy exited with ${code}:\n${out}`));
    });
  });
  return {
    pid: child.pid ?? 0,
    grpcAddress: `127.0.0.1:${ports.grpcPort}`,
    connectUrl: `http://127.0.0.1:${ports.connectPort}`,
    async stop() {
      if (child.exitCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        await exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
