/**
 * DEV ONLY. A loopback HTTP upstream that answers every request with what it received, and the
 * provider entry (`dev-echo`) that points the broker at it, so a ProxyService call works in
 * `keybroker dev` without a third-party account. Production cannot load the entry: the registry
 * refuses `allowLoopback` and plain http whenever the loopback relaxation is off
 * (provider-registry.ts; test/unit/cli/dev-echo-upstream.test.ts proves it).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export const DEV_ECHO_PROVIDER_ID = "dev-echo";
const MAX_BODY_ECHOED = 4096;
// Never echoed: a credential the broker injected, or one a caller tried to smuggle.
const WITHHELD_HEADERS = new Set(["authorization", "cookie", "proxy-authorization", "x-api-key"]);

export interface DevEchoUpstream {
  readonly port: number;
  close(): Promise<void>;
}

/** The `dev-echo` registry entry for an echo upstream listening on 127.0.0.1:`port`. */
export function devEchoProvider(port: number): Record<string, unknown> {
  return {
    id: DEV_ECHO_PROVIDER_ID,
    displayName: "Dev echo (loopback; keybroker dev only)",
    baseUrl: `http://127.0.0.1:${port}`,
    allowedHosts: ["127.0.0.1"],
    allowedMethods: ["GET", "POST"],
    pathPatterns: ["/**"],
    requiredFields: ["token"],
    auth: { type: "bearer", field: "token" },
    timeoutMs: 3000,
    maxResponseBytes: 64 * 1024,
    allowLoopback: true,
    operations: [
      { class: "read", methods: ["GET"], paths: ["/**"] },
      { class: "write", methods: ["POST"], paths: ["/**"] },
    ],
    defaultGrant: ["read", "write"],
  };
}

/** Starts the echo upstream on 127.0.0.1 (`port` 0: any free one). */
export async function startDevEchoUpstream(port: number): Promise<DevEchoUpstream> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_ECHOED) chunks.push(chunk);
    });
    req.on("end", () => answer(req, res, Buffer.concat(chunks), size));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => {
      server.off("error", reject);
      resolve();
    });
  });
  return { port: (server.address() as AddressInfo).port, close: () => closeServer(server) };
}

function answer(req: IncomingMessage, res: ServerResponse, body: Buffer, size: number): void {
  const url = new URL(req.url ?? "/", "http://127.0.0.1");
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (!WITHHELD_HEADERS.has(name) && typeof value === "string") headers[name] = value;
  }
  const auth = req.headers.authorization;
  const echoed = {
    echo: "keybroker dev echo upstream",
    method: req.method,
    path: url.pathname,
    query: Object.fromEntries(url.searchParams),
    headers,
    // The broker injected the user's key; the echo says so without repeating it.
    credential: auth === undefined ? "none" : `${auth.split(" ")[0] ?? "a"} credential received (not echoed)`,
    bodyBytes: size,
    body: size <= MAX_BODY_ECHOED ? body.toString("utf8") : `(${size} bytes, not echoed)`,
  };
  res.writeHead(200, { "content-type": "application/json" }).end(`${JSON.stringify(echoed, null, 2)}\n`);
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}
