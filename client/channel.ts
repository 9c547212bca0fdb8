/**
 * How the client's gRPC channel is set up: which credentials, which load balancing, which raw
 * grpc-js options. Kept apart from the calls so each rule here is one small, testable function.
 */
import {
  type ChannelCredentials,
  type ChannelOptions,
  credentials as channelCredentials,
} from "@grpc/grpc-js";

/** PEM material for TLS to the broker: `ca` for a private CA; `cert` + `key` for mTLS. */
export interface KeybrokerTlsOptions {
  /** The CA bundle to trust instead of the system roots (e.g. the broker's private CA). */
  readonly ca?: string | Buffer;
  /** This app's client certificate chain, for a broker listener that requires mTLS. */
  readonly cert?: string | Buffer;
  /** The client certificate's private key. */
  readonly key?: string | Buffer;
}

/** What the channel is built from; the transport half of `KeybrokerClientOptions`. */
export interface ChannelSettings {
  readonly address: string;
  readonly credentials?: ChannelCredentials | undefined;
  readonly tls?: KeybrokerTlsOptions | undefined;
  readonly loadBalancing?: "pick_first" | "round_robin" | undefined;
  readonly channelOptions?: ChannelOptions | undefined;
}

/**
 * The credentials for the channel. Plaintext only when nothing crosses a network (every address
 * of the target is loopback, or a unix socket); TLS with the system roots otherwise.
 */
export function credentialsOf(settings: ChannelSettings): ChannelCredentials {
  const { tls } = settings;
  if (settings.credentials !== undefined && tls !== undefined) {
    throw new TypeError("pass either credentials or tls, not both");
  }
  if (settings.credentials !== undefined) return settings.credentials;
  if (tls !== undefined) {
    if ((tls.cert === undefined) !== (tls.key === undefined)) {
      throw new TypeError("tls.cert and tls.key go together (mTLS needs both)");
    }
    return channelCredentials.createSsl(bufferOf(tls.ca), bufferOf(tls.key), bufferOf(tls.cert));
  }
  return isLocalAddress(settings.address)
    ? channelCredentials.createInsecure()
    : channelCredentials.createSsl();
}

/**
 * grpc-js channel options: the caller's, plus `loadBalancing` as a service config. A service
 * config from DNS (TXT records) is ignored unless the caller turns it back on, and one with a
 * retry or hedging policy is refused: grpc-js would then re-send every method, PutSecret and
 * non-idempotent proxied calls included. Retries belong to the client's own `retry` option.
 */
export function channelOptionsOf(settings: ChannelSettings): ChannelOptions {
  const options: ChannelOptions = {
    "grpc.service_config_disable_resolution": 1,
    ...settings.channelOptions,
  };
  const given = options["grpc.service_config"];
  if (settings.loadBalancing !== undefined) {
    if (given !== undefined) {
      throw new TypeError("pass either loadBalancing or a grpc.service_config channel option, not both");
    }
    options["grpc.service_config"] = JSON.stringify({
      loadBalancingConfig: [{ [settings.loadBalancing]: {} }],
    });
  } else if (given !== undefined) {
    assertNoRetryPolicy(given);
  }
  return options;
}

function assertNoRetryPolicy(serviceConfig: unknown): void {
  let parsed: unknown;
  try {
    parsed = typeof serviceConfig === "string" ? JSON.parse(serviceConfig) : undefined;
  } catch {
    throw new TypeError("the grpc.service_config channel option is not valid JSON");
  }
  const methodConfig = (parsed as { methodConfig?: unknown } | undefined)?.methodConfig;
  if (!Array.isArray(methodConfig)) return;
  for (const entry of methodConfig) {
    if (typeof entry === "object" && entry !== null && ("retryPolicy" in entry || "hedgingPolicy" in entry)) {
      throw new TypeError(
        "a grpc.service_config with retryPolicy or hedgingPolicy would re-send non-idempotent calls; use the client's retry option",
      );
    }
  }
}

/**
 * Whether every address the target names is loopback or a unix socket. A multi-address target
 * ("ipv4:127.0.0.1:1,10.0.0.5:1") is local only if all of its addresses are: one remote address
 * in it must not get plaintext.
 */
export function isLocalAddress(address: string): boolean {
  if (address.startsWith("unix:")) return true;
  const scheme = /^(dns|ipv4|ipv6):(\/\/[^/]*\/)?/.exec(address);
  const rest = scheme === null ? address : address.slice(scheme[0].length);
  const targets = scheme?.[1] === "ipv4" || scheme?.[1] === "ipv6" ? rest.split(",") : [rest];
  return targets.every((target) => isLoopbackHost(hostOf(target.trim())));
}

function hostOf(target: string): string {
  if (target.startsWith("[")) {
    const end = target.indexOf("]");
    return end === -1 ? target : target.slice(1, end);
  }
  // A bare IPv6 address (ipv6:::1) has more than one colon; host:port has exactly one.
  return target.split(":").length > 2 ? target : (target.split(":")[0] ?? "");
}

function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function bufferOf(pem: string | Buffer | undefined): Buffer | null {
  if (pem === undefined) return null;
  return typeof pem === "string" ? Buffer.from(pem) : pem;
}
