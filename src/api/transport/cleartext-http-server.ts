import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import { Duplex } from "node:stream";

/** A request handler both http and http2 compatibility requests can be passed to. */
export type CleartextRequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** One plaintext port speaking HTTP/1.1 and HTTP/2 with prior knowledge (h2c). */
export interface CleartextHttpServer {
  /** Resolves to the bound port. */
  listen(host: string, port: number): Promise<number>;
  /** Stops accepting new connections and sends GOAWAY to HTTP/2 clients. */
  stopAccepting(): void;
  /** Drops every connection, busy or not; resolves once the listener is closed. */
  destroyAll(): Promise<void>;
}

// The HTTP/2 client preface starts "PRI * HTTP/2.0"; no HTTP/1 method is spelled PRI.
const PREFACE_START = Buffer.from("PRI", "latin1");
// A connection that has not said which protocol it speaks by then is dropped.
const SNIFF_TIMEOUT_MS = 10_000;

/**
 * Node 20's `http2.createServer` cannot fall back to HTTP/1.1 without TLS (`allowHTTP1` only
 * works on secure servers), yet Connect and gRPC-Web clients use HTTP/1.1 and gRPC needs
 * HTTP/2. So the first bytes of each connection pick the server: the preface goes to the
 * HTTP/2 server, anything else to the HTTP/1.1 one.
 */
export function createCleartextHttpServer(handler: CleartextRequestHandler): CleartextHttpServer {
  const h1 = http.createServer(handler);
  const h2 = http2.createServer(handler);
  // h1 never listens itself (connections are handed to it), but its header and request
  // timeouts (slow-client protection) only run once it has seen "listening".
  h1.emit("listening");
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  // noDelay: small RPC frames must not wait for Nagle + the peer's delayed ACK (~40 ms each;
  // measured: Connect calls at concurrency 1 took 48 ms p50 without it).
  const listener = net.createServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    sniff(socket);
  });
  h2.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
  });

  function sniff(socket: net.Socket): void {
    let seen: Buffer = Buffer.alloc(0);
    socket.setTimeout(SNIFF_TIMEOUT_MS, () => socket.destroy());
    socket.on("error", () => socket.destroy()); // before hand-off; the servers add their own
    const onData = (chunk: Buffer): void => {
      seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
      const prefix = seen.subarray(0, PREFACE_START.length);
      if (seen.length < PREFACE_START.length && PREFACE_START.subarray(0, seen.length).equals(prefix)) {
        return; // could still be either
      }
      socket.off("data", onData);
      socket.pause();
      socket.setTimeout(0);
      if (prefix.equals(PREFACE_START)) {
        h2.emit("connection", replay(socket, seen));
      } else {
        socket.unshift(seen);
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  }

  function listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      listener.once("error", reject);
      listener.listen(port, host, () => {
        listener.off("error", reject);
        resolve((listener.address() as net.AddressInfo).port);
      });
    });
  }

  let closed: Promise<void> | undefined;
  function stopAccepting(): void {
    closed ??= new Promise((resolve) => listener.close(() => resolve()));
    for (const session of sessions) {
      session.close();
    }
    // HTTP/1.1 connections stay until destroyAll(): Node's closeIdleConnections() also
    // drops a connection whose request was read but not yet answered. A request arriving on
    // one meanwhile is refused by the caller (connect-server answers UNAVAILABLE).
  }

  async function destroyAll(): Promise<void> {
    stopAccepting();
    for (const session of sessions) {
      session.destroy();
    }
    for (const socket of sockets) {
      socket.destroy();
    }
    h1.close(); // stops its connection-checking timer
    await closed;
  }

  return { listen, stopAccepting, destroyAll };
}

/**
 * The socket as a stream that first replays the bytes already read. The HTTP/2 server reads
 * a net.Socket natively and would miss bytes pushed back with unshift(); a plain Duplex makes
 * it read through JavaScript, which sees them.
 */
function replay(socket: net.Socket, first: Buffer): Duplex {
  const stream = new Duplex({
    read() {
      socket.resume();
    },
    write(chunk: Buffer, _encoding, callback) {
      socket.write(chunk, callback);
    },
    final(callback) {
      socket.end(callback);
    },
    destroy(err, callback) {
      socket.destroy();
      callback(err);
    },
  });
  stream.push(first);
  socket.on("data", (chunk: Buffer) => {
    if (!stream.push(chunk)) {
      socket.pause();
    }
  });
  socket.once("end", () => stream.push(null));
  socket.once("close", () => stream.destroy());
  socket.resume();
  return stream;
}
