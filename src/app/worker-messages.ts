import type { BoundPorts } from "./servers.js";

/**
 * What a `serve --workers N` worker tells the primary over the cluster IPC channel. Only ports and
 * fixed words: the primary logs them, so nothing from a request or a secret may ever travel here.
 */
export type WorkerMessage = { readonly type: "keybroker:worker-ready"; readonly ports: BoundPorts };

export function isWorkerMessage(message: unknown): message is WorkerMessage {
  return (
    typeof message === "object" &&
    message !== null &&
    (message as { type?: unknown }).type === "keybroker:worker-ready"
  );
}
