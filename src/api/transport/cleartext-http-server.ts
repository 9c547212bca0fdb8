import http from "node:http";
import http2 from "node:http2";
import type net from "node:net";
import { Duplex } from "node:stream";
import tls from "node:tls";
import { type ConnectionLimits, createLimitedListener, listenOn } from "./connection-limits.js";

/** A request handler both http and http2 compatibility requests can be passed to. */
export type CleartextRequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** One port speaking HTTP/1.1 and HTTP/2 with prior knowledge, in plaintext or inside TLS. */
export interface CleartextHttpServer {
  /** Resolves to the bound port. */
  listen(host: string, port: number): Promise<number>;
  /** Stops accepting new connections and sends GOAWAY to HTTP/2 clients. */
  stopAccepting(): void;
  /** Drops every connection, busy or not; resolves once the listener is closed. */
  destroyAll(): Promise<void>;
  /**
   * The DER client certificate the TLS handshake verified for this request's connection;
   * undefined in plaintext or when the client presented none.
   */
  verifiedClientCertificate(req: http.IncomingMessage | http2.Http2ServerRequest): Buffer | undefined;
}

// The HTTP/2 client preface starts "PRI * HTTP/2.0"; no HTTP/1 method is spelled PRI.
const PREFACE_START = Buffer.from("PRI", "latin1");
/** Limits of the port and, to serve inside TLS, Node TLS server options (see tls-credentials.ts). */
export interface CleartextHttpServerOptions {
  readonly limits: ConnectionLimits;
  readonly tls?: tls.TlsOptions;
}

/**
 * Node 20's `http2.createServer` cannot fall back to HTTP/1.1 without TLS (`allowHTTP1` only
 * works on secure servers), yet Connect and gRPC-Web clients use HTTP/1.1 and gRPC needs
 * HTTP/2. So the first cleartext bytes of each connection pick the server: the preface goes to
 * the HTTP/2 server, anything else to the HTTP/1.1 one. With TLS options, TLS is taken off
 * first (handshake bounded, mTLS if they ask for client certificates) and the same sniffing
 * runs on the decrypted stream, so both protocols and every limit stay one code path (M3).
 */
export function createCleartextHttpServer(
  handler: CleartextRequestHandler,
  options: CleartextHttpServerOptions,
): CleartextHttpServer {
  const { limits } = options;
  const h1 = http.createServer(handler);
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: limits.maxConcurrentStreams } }, handler);
  // h1 never listens itself (connections are handed to it), but its header and request
  // timeouts (slow-client protection) only run once it has seen "listening".
  h1.emit("listening");
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.ServerHttp2Session>();
  // An HTTP/2 session reads a replaying stream (below), not the TLS socket under it: each
  // session is tied to its TLS socket as it is created (synchronously, in "connection").
  const tlsOfSession = new WeakMap<http2.ServerHttp2Session, tls.TLSSocket>();
  let connectingTls: tls.TLSSocket | undefined;
  // Never listens: raw sockets are handed to it, and it runs Node's own server-side TLS
  // (handshake timeout, client-certificate checks), then the sniffing below on the clear stream.
  const tlsServer =
    options.tls === undefined
      ? undefined
      : tls.createServer({ ...options.tls, ALPNProtocols: ["h2", "http/1.1"] }, sniff);
  // A plain tls.Server only reports a failed or timed-out handshake; the socket must be dropped
  // here (https and http2 servers do this themselves).
  tlsServer?.on("tlsClientError", (_err, socket: tls.TLSSocket) => socket.destroy());
  // The cap counts TCP connections, TLS handshakes in progress included (L5).
  const listener = createLimitedListener(limits, (socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    if (tlsServer === undefined) {
      sniff(socket);
    } else {
      tlsServer.emit("connection", socket);
    }
  });
  h2.on("session", (session: http2.ServerHttp2Session) => {
    sessions.add(session);
    if (connectingTls !== undefined) tlsOfSession.set(session, connectingTls);
    session.once("close", () => sessions.delete(session));
    // Activity-based, and close() lets calls in flight finish: only a quiet connection goes.
    session.setTimeout(limits.idleTimeoutMs, () => session.close());
  });

  function sniff(socket: net.Socket): void {
    let seen: Buffer = Buffer.alloc(0);
    // A connection that has not said which protocol it speaks in time is dropped.
    socket.setTimeout(limits.handshakeTimeoutMs, () => socket.destroy());
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
        connectingTls = socket instanceof tls.TLSSocket ? socket : undefined;
        h2.emit("connection", replay(socket, seen));
        connectingTls = undefined;
      } else {
        socket.unshift(seen);
        h1.emit("connection", socket);
        socket.resume();
      }
    };
    socket.on("data", onData);
  }

  function listen(host: string, port: number): Promise<number> {
    return listenOn(listener, host, port);
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

  function verifiedClientCertificate(
    req: http.IncomingMessage | http2.Http2ServerRequest,
  ): Buffer | undefined {
    const secured =
      req instanceof http2.Http2ServerRequest
        ? tlsOfSession.get(req.stream.session as http2.ServerHttp2Session)
        : req.socket;
    if (!(secured instanceof tls.TLSSocket) || !secured.authorized) return undefined;
    return secured.getPeerCertificate().raw as Buffer | undefined;
  }

  return { listen, stopAccepting, destroyAll, verifiedClientCertificate };
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
