import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import type { CryptoKey, JWK, JWTPayload } from "jose";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from "jose";

/** Options for a test issuer; all optional. */
export interface TestIssuerOptions {
  /** API identifier put in `aud`; default "https://keybroker.test/api". */
  readonly audience?: string;
  /** Permission put in `scope`; default "secrets:use". */
  readonly permission?: string;
}

export interface SignOptions {
  /** Header `kid` to claim (the token is still signed with the current key unless `signWith`). */
  readonly kid?: string;
  /** Sign with the key of this kid, even a dropped one (default: the current key). */
  readonly signWith?: string;
  /** Extra or overriding protected-header members, e.g. `{ jku: "http://..." }`. */
  readonly header?: Record<string, unknown>;
  /** Default 300. Ignored when `claims.exp` is given. */
  readonly expiresInSec?: number;
  /** Default claims to leave out entirely, e.g. `["exp"]`. */
  readonly omitClaims?: readonly string[];
}

/** A real JWKS server on 127.0.0.1 whose behaviour tests can steer. */
export interface TestIssuer {
  /** "http://127.0.0.1:PORT/" (with the trailing slash, like Auth0). */
  readonly issuer: string;
  readonly jwksUrl: string;
  readonly audience: string;
  readonly permission: string;
  /** Signs an RS256 token with the current key over default claims merged with `claims`. */
  sign(claims?: Partial<JWTPayload>, opts?: SignOptions): Promise<string>;
  /** Adds a new current key (published alongside the old ones) and returns its kid. */
  rotateKey(kid?: string): Promise<string>;
  /** Stops publishing the key(s) with this kid. */
  dropKey(kid: string): void;
  /**
   * Generates a key now and returns a function that publishes it (as the current key) later,
   * synchronously: for tests whose timing must not include RSA key generation.
   */
  prepareKey(kid?: string): Promise<() => string>;
  /** Publishes a dropped key again. */
  restoreKey(kid: string): void;
  /** Answer JWKS requests with this status (and no keys), or `null` to serve normally. */
  setStatus(code: number | null): void;
  /** Delay every JWKS response by this many ms. */
  setDelayMs(ms: number): void;
  /** JWKS requests received so far. */
  fetchCount(): number;
  /** SPKI PEM of the current public key (the HMAC secret of an alg-confusion attack). */
  publicKeyPem(): string;
  currentKid(): string;
  close(): Promise<void>;
}

interface SigningKey {
  readonly kid: string;
  readonly privateKey: CryptoKey;
  readonly publicJwk: JWK;
  readonly publicPem: string;
  dropped: boolean;
}

export async function startTestIssuer(opts: TestIssuerOptions = {}): Promise<TestIssuer> {
  const audience = opts.audience ?? "https://keybroker.test/api";
  const permission = opts.permission ?? "secrets:use";
  const keys: SigningKey[] = [];
  let status: number | null = null;
  let delayMs = 0;
  let fetches = 0;
  const timers = new Set<NodeJS.Timeout>();

  const prepareKey = async (kid: string): Promise<() => string> => {
    const pair = await generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
    const jwk = await exportJWK(pair.publicKey);
    const key: SigningKey = {
      kid,
      privateKey: pair.privateKey,
      publicJwk: { ...jwk, kid, alg: "RS256", use: "sig" },
      publicPem: await exportSPKI(pair.publicKey),
      dropped: false,
    };
    return () => {
      keys.push(key);
      return kid;
    };
  };
  const addKey = async (kid: string): Promise<string> => (await prepareKey(kid))();
  const current = (): SigningKey => {
    const key = keys.at(-1);
    if (key === undefined) throw new Error("test issuer has no key");
    return key;
  };
  const keyOf = (kid: string): SigningKey => {
    const key = keys.find((k) => k.kid === kid);
    if (key === undefined) throw new Error(`test issuer has no key ${kid}`);
    return key;
  };
  await addKey(randomUUID());

  const respond = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.url !== "/.well-known/jwks.json") {
      res.writeHead(404).end();
      return;
    }
    fetches++;
    if (status !== null) {
      res.writeHead(status, { "content-type": "text/plain" }).end("unavailable");
      return;
    }
    const body = JSON.stringify({ keys: keys.filter((k) => !k.dropped).map((k) => k.publicJwk) });
    res.writeHead(200, { "content-type": "application/json" }).end(body);
  };
  const server = createServer((req, res) => {
    if (delayMs <= 0) {
      respond(req, res);
      return;
    }
    const timer = setTimeout(() => {
      timers.delete(timer);
      if (!res.destroyed) respond(req, res);
    }, delayMs);
    timers.add(timer);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}/`;

  return {
    issuer,
    jwksUrl: `${issuer}.well-known/jwks.json`,
    audience,
    permission,
    async sign(claims = {}, signOpts = {}) {
      const key = signOpts.signWith === undefined ? current() : keyOf(signOpts.signWith);
      const iat = Math.floor(Date.now() / 1000);
      const payload: Record<string, unknown> = {
        iss: issuer,
        aud: audience,
        sub: "auth0|test-user",
        scope: `openid profile ${permission}`,
        iat,
        exp: iat + (signOpts.expiresInSec ?? 300),
        ...claims,
      };
      for (const name of signOpts.omitClaims ?? []) delete payload[name];
      return new SignJWT(payload)
        .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: signOpts.kid ?? key.kid, ...signOpts.header })
        .sign(key.privateKey);
    },
    rotateKey: (kid) => addKey(kid ?? randomUUID()),
    prepareKey: (kid) => prepareKey(kid ?? randomUUID()),
    dropKey(kid) {
      for (const key of keys) if (key.kid === kid) key.dropped = true;
    },
    restoreKey(kid) {
      for (const key of keys) if (key.kid === kid) key.dropped = false;
    },
    setStatus(code) {
      status = code;
    },
    setDelayMs(ms) {
      delayMs = ms;
    },
    fetchCount: () => fetches,
    publicKeyPem: () => current().publicPem,
    currentKid: () => current().kid,
    close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err === undefined ? resolve() : reject(err)));
        server.closeAllConnections();
      });
    },
  };
}
