import { z } from "zod";

/** PEM files of the public listener (the same shape as config.ts's ServerTlsConfig, without mTLS). */
export interface PublicTlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** OAuth connections (issue 15): the public callback listener and where browsers may return. */
export interface OAuthConfig {
  /** The public listener serving only GET /oauth/callback. */
  readonly listener: {
    readonly host: string;
    readonly port: number;
    readonly tls: PublicTlsFiles | undefined;
  };
  /** The callback's public URL, registered with each provider as the redirect URI. */
  readonly callbackUrl: string;
  /** Caller key name → the return URLs its users may be sent back to (exact matches). */
  readonly returnUrls: Readonly<Record<string, readonly string[]>>;
  readonly stateTtlMs: number;
}

const port = z.coerce.number().int().min(0).max(65535);

export const oauthEnvSchema = {
  KEYBROKER_PUBLIC_HOST: z.string().min(1).default("127.0.0.1"),
  /** The public OAuth callback listener; "off" (the default) disables OAuth connections. */
  KEYBROKER_PUBLIC_PORT: z.union([z.literal("off"), port]).default("off"),
  KEYBROKER_PUBLIC_TLS_CERT_FILE: z.string().min(1).optional(),
  KEYBROKER_PUBLIC_TLS_KEY_FILE: z.string().min(1).optional(),
  KEYBROKER_OAUTH_CALLBACK_URL: z.string().min(1).optional(),
  /** JSON: {"<caller key name>": ["https://app.example.com/connections/done", ...]}. */
  KEYBROKER_OAUTH_RETURN_URLS: z.string().min(1).optional(),
  KEYBROKER_OAUTH_STATE_TTL_SECONDS: z.coerce.number().int().min(60).max(3600).default(600),
};

type OAuthEnv = z.infer<z.ZodObject<typeof oauthEnvSchema>>;

const returnUrlsSchema = z.record(
  z.string().min(1).max(64),
  z.array(z.string().min(1).max(2048)).min(1).max(32),
);

/**
 * Parses the OAuth settings, adding every problem to `problems`. Plain http (callback, return
 * URLs, listener) only for loopback hosts and only when `allowHttp` (outside production).
 */
export function parseOAuthConfig(
  e: OAuthEnv,
  options: { readonly allowHttp: boolean; readonly isLoopbackHost: (host: string) => boolean },
  problems: string[],
): OAuthConfig | undefined {
  if (e.KEYBROKER_PUBLIC_PORT === "off") return undefined;
  const { allowHttp, isLoopbackHost } = options;
  const checkUrl = (name: string, value: string): void => {
    let u: URL;
    try {
      u = new URL(value);
    } catch {
      problems.push(`${name}: "${value}" is not a URL`);
      return;
    }
    const httpOk = allowHttp && u.protocol === "http:" && isLoopbackHost(u.hostname);
    if (u.protocol !== "https:" && !httpOk) problems.push(`${name}: ${value} must be https`);
    if (u.username !== "" || u.password !== "" || u.hash !== "" || value.includes("#")) {
      problems.push(`${name}: ${value} must have no credentials and no fragment`);
    }
  };
  const callbackUrl = e.KEYBROKER_OAUTH_CALLBACK_URL;
  if (callbackUrl === undefined) {
    problems.push(
      "KEYBROKER_OAUTH_CALLBACK_URL: required with KEYBROKER_PUBLIC_PORT (the redirect URI providers know)",
    );
  } else {
    checkUrl("KEYBROKER_OAUTH_CALLBACK_URL", callbackUrl);
    if (URL.canParse(callbackUrl) && new URL(callbackUrl).pathname !== "/oauth/callback") {
      problems.push("KEYBROKER_OAUTH_CALLBACK_URL: its path must be /oauth/callback");
    }
  }
  let returnUrls: Record<string, string[]> = {};
  if (e.KEYBROKER_OAUTH_RETURN_URLS === undefined) {
    problems.push(
      "KEYBROKER_OAUTH_RETURN_URLS: required with KEYBROKER_PUBLIC_PORT (JSON: caller key name → URLs)",
    );
  } else {
    let raw: unknown;
    try {
      raw = JSON.parse(e.KEYBROKER_OAUTH_RETURN_URLS);
    } catch {
      raw = undefined;
    }
    const parsed = returnUrlsSchema.safeParse(raw);
    if (!parsed.success) {
      problems.push(
        'KEYBROKER_OAUTH_RETURN_URLS: must be JSON like {"main-app": ["https://app.example.com/done"]}',
      );
    } else {
      returnUrls = parsed.data;
      for (const urls of Object.values(returnUrls))
        for (const u of urls) checkUrl("KEYBROKER_OAUTH_RETURN_URLS", u);
    }
  }
  const certFile = e.KEYBROKER_PUBLIC_TLS_CERT_FILE;
  const keyFile = e.KEYBROKER_PUBLIC_TLS_KEY_FILE;
  if ((certFile === undefined) !== (keyFile === undefined)) {
    problems.push(
      "KEYBROKER_PUBLIC_TLS_KEY_FILE: set both KEYBROKER_PUBLIC_TLS_CERT_FILE and _KEY_FILE, or neither",
    );
  }
  const tls = certFile === undefined || keyFile === undefined ? undefined : { certFile, keyFile };
  // The callback carries authorization codes: HTTPS, except a loopback listener outside production.
  if (tls === undefined && !(allowHttp && isLoopbackHost(e.KEYBROKER_PUBLIC_HOST))) {
    problems.push(
      "KEYBROKER_PUBLIC_TLS_CERT_FILE: the OAuth callback listener serves HTTPS (cert and key files)",
    );
  }
  return {
    listener: { host: e.KEYBROKER_PUBLIC_HOST, port: e.KEYBROKER_PUBLIC_PORT, tls },
    callbackUrl: callbackUrl ?? "",
    returnUrls,
    stateTtlMs: e.KEYBROKER_OAUTH_STATE_TTL_SECONDS * 1000,
  };
}
