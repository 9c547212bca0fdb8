import net from "node:net";

/**
 * Per-listener connection limits (review L5). Without them one client could hold any number of
 * connections, idle ones forever, and half-open TLS handshakes for Node's default two minutes.
 */
export interface ConnectionLimits {
  /** Open connections at once; one past the cap is closed as it arrives. */
  readonly maxConnections: number;
  /** HTTP/2 streams (calls) at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS). */
  readonly maxConcurrentStreams: number;
  /** A connection with no call for this long is sent GOAWAY and closed. */
  readonly idleTimeoutMs: number;
  /** The TLS handshake, or in plaintext the HTTP/2 preface, must arrive within this. */
  readonly handshakeTimeoutMs: number;
}

export const DEFAULT_CONNECTION_LIMITS: ConnectionLimits = {
  maxConnections: 1_000,
  maxConcurrentStreams: 100,
  idleTimeoutMs: 300_000,
  handshakeTimeoutMs: 10_000,
};

// "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n": what a plaintext HTTP/2 client sends first.
const HTTP2_PREFACE_BYTES = 24;

/**
 * A TCP listener that admits at most `maxConnections` sockets at once and hands each to
 * `onConnection`. Node itself closes a socket that arrives past the cap (`maxConnections`), before
 * any byte of it is read; the count drops as sockets close.
 */
export function createLimitedListener(
  limits: Pick<ConnectionLimits, "maxConnections">,
  onConnection: (socket: net.Socket) => void,
): net.Server {
  // noDelay: small RPC frames must not wait for Nagle + the peer's delayed ACK (~40 ms each).
  const listener = net.createServer({ noDelay: true }, onConnection);
  listener.maxConnections = limits.maxConnections;
  return listener;
}

/**
 * Closes a plaintext HTTP/2 connection whose client has not sent the whole preface in time: the
 * plaintext counterpart of a TLS handshake timeout. Reads nothing itself (the HTTP/2 server
 * reads the socket natively); it only looks at the byte count when the time is up.
 */
export function closeWithoutPreface(socket: net.Socket, timeoutMs: number): void {
  const timer = setTimeout(() => {
    if (socket.bytesRead < HTTP2_PREFACE_BYTES) socket.destroy();
  }, timeoutMs);
  timer.unref();
  socket.once("close", () => clearTimeout(timer));
}

/** Binds `listener`; resolves to the bound port (useful with port 0). */
export function listenOn(listener: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(port, host, () => {
      listener.off("error", reject);
      resolve((listener.address() as net.AddressInfo).port);
    });
  });
}
