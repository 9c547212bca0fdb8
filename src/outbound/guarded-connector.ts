import { lookup } from "node:dns/promises";
import { connect as netConnect, type Socket } from "node:net";
import { createSecureContext, rootCertificates, type SecureContext, connect as tlsConnect } from "node:tls";
import type { buildConnector } from "undici";
import { BrokerError } from "../errors.js";
import { createAddressGuard, parseIpLiteral } from "./address-guard.js";

/** One DNS answer. */
export interface ResolvedAddress {
  readonly address: string;
  readonly family: number;
}

/** Resolves a hostname to every address it has; injectable so tests need no real DNS. */
export type Resolver = (hostname: string) => Promise<readonly ResolvedAddress[]>;

/** The system resolver (getaddrinfo), all answers in the order the OS gives them. */
export const systemResolver: Resolver = (hostname) => lookup(hostname, { all: true, verbatim: true });

/** Where the connector actually opens a socket; `address` is always a checked IP. */
export interface DialTarget {
  readonly address: string;
  readonly port: number;
  readonly protocol: "https:" | "http:";
  /** SNI and certificate name; absent when the host is an IP literal. */
  readonly servername: string | undefined;
  /** Trust store when an extra CA is configured; undefined means Node's bundled roots. */
  readonly secureContext: SecureContext | undefined;
}

/** Opens the socket; tests may wrap it to observe which address was dialled. */
export type Dialer = (target: DialTarget) => Socket;

const TLS_MIN_VERSION = "TLSv1.2";

export const defaultDialer: Dialer = (target) => {
  if (target.protocol === "http:") return netConnect({ host: target.address, port: target.port });
  return tlsConnect({
    host: target.address,
    port: target.port,
    // The socket goes to the checked IP, but TLS still names and verifies the real host, so
    // pinning the address costs no certificate checking.
    ...(target.servername === undefined ? {} : { servername: target.servername }),
    ...(target.secureContext === undefined ? {} : { secureContext: target.secureContext }),
    ALPNProtocols: ["http/1.1"],
    minVersion: TLS_MIN_VERSION,
    rejectUnauthorized: true,
  });
};

export interface GuardedConnectorOptions {
  /** Exact hostnames (as the WHATWG parser spells them) this connector may reach. */
  readonly allowedHosts: readonly string[];
  /** Dev/test only: permits 127/8 and ::1, and plain http. */
  readonly allowLoopback: boolean;
  readonly resolve: Resolver;
  /** Extra trusted CA (tests); added to, not instead of, the bundled roots. */
  readonly ca?: string | Buffer;
  readonly connectTimeoutMs: number;
  readonly dial?: Dialer;
}

/**
 * An undici connector that is the SSRF guard (C26, C27, C29). For every new connection it:
 * checks the hostname against the provider's allowlist; resolves it ONCE (or takes the literal
 * IP without any lookup); refuses if ANY answer is in a blocked range, so a hostname that
 * mixes public and internal answers never works by luck; then dials the exact address it
 * checked. Nothing resolves the name again between the check and the connect, so DNS
 * rebinding has no second answer to swap in.
 */
export function createGuardedConnector(options: GuardedConnectorOptions): buildConnector.connector {
  const guard = createAddressGuard({ allowLoopback: options.allowLoopback });
  const dial = options.dial ?? defaultDialer;
  // Built once: a `ca` list on every connect would parse ~140 PEM roots into a fresh context per
  // connection (~50 ms of CPU each, measured with bench/tools/profile-hot-path.ts).
  const secureContext =
    options.ca === undefined
      ? undefined
      : // tls.connect ignores its own minVersion when handed a context: the floor goes in here too.
        createSecureContext({ ca: [...rootCertificates, options.ca], minVersion: TLS_MIN_VERSION });

  const open = async (hostname: string, protocol: string, port: string): Promise<Socket> => {
    const bare = hostname.startsWith("[") ? hostname.slice(1, -1) : hostname;
    if (!options.allowedHosts.includes(bare) && !options.allowedHosts.includes(`[${bare}]`)) {
      throw new BrokerError("permission_denied", "upstream host is not allowed for this provider");
    }
    if (protocol !== "https:" && !(protocol === "http:" && options.allowLoopback)) {
      throw new BrokerError("permission_denied", "upstream must be reached over TLS");
    }

    const literal = parseIpLiteral(bare);
    const addresses =
      literal === undefined ? (await options.resolve(bare)).map((a) => a.address) : [literal.address];
    if (addresses.length === 0) throw new BrokerError("unavailable", "upstream host did not resolve");
    for (const address of addresses) {
      const reason = guard.refusalReason(address);
      if (reason !== undefined) {
        throw new BrokerError("permission_denied", "upstream address is not allowed", {
          cause: new Error(reason),
        });
      }
    }

    const target: DialTarget = {
      address: addresses[0] as string,
      port: port === "" ? (protocol === "https:" ? 443 : 80) : Number(port),
      protocol: protocol === "https:" ? "https:" : "http:",
      servername: literal === undefined ? bare : undefined,
      secureContext,
    };
    return await waitConnected(dial(target), target.protocol, options.connectTimeoutMs);
  };

  return ({ hostname, protocol, port }, callback) => {
    open(hostname, protocol, port).then(
      (socket) => callback(null, socket),
      (err: Error) => callback(err, null),
    );
  };
}

function waitConnected(socket: Socket, protocol: "https:" | "http:", timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => {
      clearTimeout(timer);
      reject(err);
    };
    const timer = setTimeout(() => {
      socket.off("error", onError);
      socket.destroy();
      reject(new BrokerError("unavailable", "upstream did not accept the connection in time"));
    }, timeoutMs);
    socket.once("error", onError);
    socket.once(protocol === "https:" ? "secureConnect" : "connect", () => {
      clearTimeout(timer);
      socket.off("error", onError);
      socket.setNoDelay(true);
      socket.setKeepAlive(true, 60_000);
      resolve(socket);
    });
  });
}
