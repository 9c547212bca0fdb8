/**
 * The local KMS-protocol server (test/support/local-kms-server.ts) in a child process driven over
 * IPC, as a real KMS is remote: its CPU is not counted as the client's. Used by the rewrap bench
 * and the SDK cost bench; a script that calls `startKmsChild(import.meta.url)` must call
 * `serveKmsIfChild()` first thing.
 */
import { type ChildProcess, fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { startLocalKmsServer } from "../../test/support/local-kms-server.js";

export type KmsRequest =
  | { op: "createKey" }
  | { op: "setLatency"; ms: number }
  | { op: "count"; name: string }
  | { op: "resetCounts" };

const CHILD_FLAG = "--kms-child";

/** In the child: serves KMS and answers the parent's requests; returns true. In the parent: false. */
export async function serveKmsIfChild(): Promise<boolean> {
  if (!process.argv.includes(CHILD_FLAG)) return false;
  const server = await startLocalKmsServer();
  process.on("message", (message: { id: number } & KmsRequest) => {
    let result: unknown = null;
    if (message.op === "createKey") result = server.createKey("bench");
    else if (message.op === "setLatency") server.setFaults({ latencyMs: message.ms });
    else if (message.op === "count") result = server.callCount(message.name);
    else server.resetCounts();
    process.send?.({ id: message.id, result });
  });
  process.on("disconnect", () => {
    void server.close().then(() => process.exit(0));
  });
  process.send?.({ id: 0, result: { endpoint: server.endpoint, region: server.region } });
  return true;
}

export interface KmsChild {
  readonly endpoint: string;
  readonly region: string;
  readonly pid: number;
  call<T>(request: KmsRequest): Promise<T>;
  stop(): void;
}

/** Forks `scriptUrl` (the calling script) in child mode. */
export async function startKmsChild(scriptUrl: string): Promise<KmsChild> {
  const child: ChildProcess = fork(fileURLToPath(scriptUrl), [CHILD_FLAG], { stdio: "inherit" });
  const pending = new Map<number, (result: unknown) => void>();
  let nextId = 1;
  const ready = new Promise<{ endpoint: string; region: string }>((resolve, reject) => {
    pending.set(0, (result) => resolve(result as { endpoint: string; region: string }));
    child.once("error", reject);
    child.once("exit", (code) => reject(new Error(`KMS child exited with ${code}`)));
  });
  child.on("message", (message: { id: number; result: unknown }) => {
    pending.get(message.id)?.(message.result);
    pending.delete(message.id);
  });
  const { endpoint, region } = await ready;
  return {
    endpoint,
    region,
    pid: child.pid ?? 0,
    call<T>(request: KmsRequest) {
      const id = nextId++;
      return new Promise<T>((resolve) => {
        pending.set(id, (result) => resolve(result as T));
        child.send({ id, ...request });
      });
    },
    stop: () => child.disconnect(),
  };
}
