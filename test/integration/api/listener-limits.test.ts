import { once } from "node:events";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import net from "node:net";
import { setTimeout as delay } from "node:timers/promises";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createConnectServer } from "../../../src/api/transport/connect-server.js";
import type { ConnectionLimits } from "../../../src/api/transport/connection-limits.js";
import { createGrpcServer } from "../../../src/api/transport/grpc-server.js";
import {
  grpcServerCredentials,
  loadServerTls,
  nodeTlsOptions,
} from "../../../src/api/transport/tls-credentials.js";
import { createLogger } from "../../../src/log/logger.js";
import { createMtlsCertificates, type MtlsCertificates } from "../../support/mtls-certificates.js";
import { createFakeServices } from "./fake-services.js";

/**
 * L5 on both RPC listeners, with real connections: a connection cap, a per-connection stream
 * cap, an idle timeout and a handshake timeout. The limits are tiny so each shows quickly.
 */
const LIMITS: ConnectionLimits = {
  maxConnections: 2,
  maxConcurrentStreams: 3,
  idleTimeoutMs: 300,
  handshakeTimeoutMs: 300,
};
// Long enough that only the limit under test can close a connection.
const PATIENT: ConnectionLimits = { ...LIMITS, idleTimeoutMs: 60_000, handshakeTimeoutMs: 60_000 };

type Transport = "grpc-js" | "connect";

let certs: MtlsCertificates;
beforeAll(() => {
  certs = createMtlsCertificates();
});
afterAll(() => certs.remove());

const stops: Array<() => Promise<void>> = [];
const opened: Array<{ close(): void }> = [];
afterEach(async () => {
  for (const o of opened.splice(0)) o.close();
  await Promise.all(stops.splice(0).map((stop) => stop()));
});

async function start(transport: Transport, limits: ConnectionLimits, secure = false): Promise<number> {
  const common = {
    services: createFakeServices().registrations,
    logger: createLogger({ level: "silent" }),
    limits,
  };
  const tls = secure
    ? await loadServerTls({ certFile: certs.serverCertFile, keyFile: certs.serverKeyFile })
    : undefined;
  const server =
    transport === "grpc-js"
      ? createGrpcServer({
          ...common,
          ...(tls === undefined
            ? {}
            : { credentials: grpcServerCredentials(tls, limits.handshakeTimeoutMs) }),
        })
      : createConnectServer({
          ...common,
          ...(tls === undefined ? {} : { tls: nodeTlsOptions(tls, limits.handshakeTimeoutMs) }),
        });
  stops.push(() => server.shutdown(100));
  return server.listen("127.0.0.1", 0);
}

/** A plaintext HTTP/2 session that has exchanged SETTINGS with the server (so it was admitted). */
async function h2Session(port: number): Promise<http2.ClientHttp2Session> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  opened.push(session);
  const [settings] = (await once(session, "remoteSettings")) as [http2.Settings];
  expect(settings).toBeDefined();
  return session;
}

/** Whether a new HTTP/2 connection is admitted (gets SETTINGS) rather than closed. */
async function settles(port: number): Promise<boolean> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on("error", () => {});
  opened.push(session);
  return new Promise((resolve) => {
    session.once("remoteSettings", () => resolve(true));
    session.once("close", () => resolve(false));
  });
}

function ping(session: http2.ClientHttp2Session): Promise<boolean> {
  return new Promise((resolve) => session.ping((err) => resolve(err === null)));
}

/**
 * A raw TCP connection that sends nothing; resolves once connected. It reads (and drops) what
 * the server sends, so the server's close is seen after any SETTINGS frame it wrote first.
 */
async function silentSocket(port: number): Promise<net.Socket> {
  const socket = net.connect(port, "127.0.0.1");
  socket.on("error", () => {});
  socket.resume();
  opened.push({ close: () => socket.destroy() });
  await once(socket, "connect");
  return socket;
}

describe.each(["grpc-js", "connect"] as const)("the %s listener", (transport) => {
  it("G67 L5: closes a connection past the cap as it arrives and keeps the admitted ones", async () => {
    const port = await start(transport, PATIENT);
    const first = await h2Session(port);
    const second = await h2Session(port);
    const third = await silentSocket(port);
    await once(third, "close");
    expect(await ping(first)).toBe(true);
    expect(await ping(second)).toBe(true);
    // A slot frees when an admitted connection goes (the server may see the close a moment later).
    first.close();
    await once(first, "close");
    let admitted = false;
    for (let attempt = 0; attempt < 50 && !admitted; attempt++) {
      admitted = await settles(port);
      if (!admitted) await delay(20);
    }
    expect(admitted).toBe(true);
  });

  it("G67 L5: announces its cap on concurrent streams per connection in SETTINGS", async () => {
    const session = http2.connect(`http://127.0.0.1:${await start(transport, PATIENT)}`);
    opened.push(session);
    const [settings] = (await once(session, "remoteSettings")) as [http2.Settings];
    expect(settings.maxConcurrentStreams).toBe(LIMITS.maxConcurrentStreams);
  });

  it("G67 L5: closes a connection that stays idle past the idle timeout", async () => {
    const session = await h2Session(
      await start(transport, { ...PATIENT, idleTimeoutMs: LIMITS.idleTimeoutMs }),
    );
    await once(session, "close");
    expect(session.closed || session.destroyed).toBe(true);
  });

  it("G67 L5: closes a plaintext connection that never sends the HTTP/2 preface", async () => {
    const socket = await silentSocket(await start(transport, { ...PATIENT, handshakeTimeoutMs: 300 }));
    await once(socket, "close");
    expect(socket.bytesWritten).toBe(0);
  });

  it("G67 L5: closes a connection that never completes the TLS handshake", async () => {
    const socket = await silentSocket(await start(transport, { ...PATIENT, handshakeTimeoutMs: 300 }, true));
    await once(socket, "close");
    expect(socket.bytesWritten).toBe(0);
  });

  it("G67 L5: serves TLS clients that do complete the handshake under the same limits", async () => {
    const port = await start(transport, { ...PATIENT, handshakeTimeoutMs: 300 }, true);
    const session = http2.connect(`https://127.0.0.1:${port}`, { ca: readFileSync(certs.caFile) });
    session.on("error", () => {});
    opened.push(session);
    await once(session, "remoteSettings");
    expect(await ping(session)).toBe(true);
  });
});
