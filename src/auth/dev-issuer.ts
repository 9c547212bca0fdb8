/**
 * ============================================================================================
 *  DEV ONLY. A toy OIDC issuer so `keybroker dev` runs without Auth0. It signs whatever it is
 *  asked to sign: anyone who can reach it or read its key file can act as any user. It binds
 *  to loopback only, and production configuration must refuse to point at it.
 * ============================================================================================
 */
import { chmod, mkdir, readFile, stat, writeFile } from "node:fs/promises";
import type { Server } from "node:http";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { dirname } from "node:path";
import type { JWK } from "jose";
import { calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, SignJWT } from "jose";
import { BrokerError } from "../errors.js";

/** The dev issuer's RSA signing key (private and public JWK share `kid`). */
export interface DevIssuerKey {
  readonly privateJwk: JWK;
  readonly publicJwk: JWK;
  readonly kid: string;
}

/** A running dev issuer. */
export interface DevIssuer {
  /** "http://127.0.0.1:PORT/" — with the trailing slash, as Auth0 issuers have. */
  readonly issuer: string;
  readonly jwksUrl: string;
  close(): Promise<void>;
}

export interface DevTokenClaims {
  readonly issuer: string;
  readonly audience: string;
  readonly subject: string;
  readonly permissions: readonly string[];
  readonly expiresInSec: number;
  readonly azp?: string;
}

const LOOPBACK_HOSTS = new Set(["127.0.0.1", "::1", "localhost"]);

/**
 * Reads the key file, or creates it (RSA-2048, mode 0600) on first run. Refuses a file that
 * others can read, as ssh does: whoever reads it can mint tokens for any user.
 */
export async function loadOrCreateDevIssuerKey(path: string): Promise<DevIssuerKey> {
  const existing = await readKeyFile(path);
  if (existing !== undefined) return existing;

  const { privateKey } = await generateKeyPair("RS256", { modulusLength: 2048, extractable: true });
  const jwk = await exportJWK(privateKey);
  const kid = await calculateJwkThumbprint(jwk);
  const privateJwk: JWK = { ...jwk, kid, alg: "RS256", use: "sig" };
  const key: DevIssuerKey = { privateJwk, publicJwk: toPublicJwk(privateJwk), kid };

  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  try {
    // "wx": never overwrite a key another process created meanwhile; mode applies on creation.
    await writeFile(path, `${JSON.stringify({ kid, privateJwk })}\n`, { flag: "wx", mode: 0o600 });
    await chmod(path, 0o600); // the umask may have narrowed it further, never widened; be exact.
  } catch (err) {
    if (errorCode(err) === "EEXIST") {
      const raced = await readKeyFile(path);
      if (raced !== undefined) return raced;
    }
    throw new BrokerError("failed_precondition", "cannot write the dev issuer key file", { cause: err });
  }
  return key;
}

/** Serves the JWKS and discovery document on a loopback address. */
export async function startDevIssuer(opts: {
  readonly host: string;
  readonly port: number;
  readonly key: DevIssuerKey;
}): Promise<DevIssuer> {
  if (!LOOPBACK_HOSTS.has(opts.host)) {
    throw new BrokerError("failed_precondition", "the dev issuer binds to a loopback address only");
  }
  let issuer = "";
  const jwksBody = JSON.stringify({ keys: [opts.key.publicJwk] });
  const server = createServer((req, res) => {
    const path = (req.url ?? "").split("?")[0];
    const body =
      req.method !== "GET"
        ? undefined
        : path === "/.well-known/jwks.json"
          ? jwksBody
          : path === "/.well-known/openid-configuration"
            ? JSON.stringify(discoveryDocument(issuer))
            : undefined;
    if (body === undefined) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=60" }).end(body);
  });
  const port = await listen(server, opts.host, opts.port);
  const urlHost = opts.host === "::1" ? "[::1]" : opts.host;
  issuer = `http://${urlHost}:${port}/`;
  return {
    issuer,
    jwksUrl: `${issuer}.well-known/jwks.json`,
    close: () => closeServer(server),
  };
}

/** Signs an RS256 access token shaped like Auth0's (`scope` = permissions joined by spaces). */
export async function signDevToken(key: DevIssuerKey, claims: DevTokenClaims): Promise<string> {
  const privateKey = await importJWK(key.privateJwk, "RS256");
  const payload: Record<string, unknown> = { scope: claims.permissions.join(" ") };
  if (claims.azp !== undefined) payload.azp = claims.azp;
  return new SignJWT(payload)
    .setProtectedHeader({ alg: "RS256", typ: "JWT", kid: key.kid })
    .setIssuer(claims.issuer)
    .setAudience(claims.audience)
    .setSubject(claims.subject)
    .setIssuedAt()
    .setExpirationTime(`${claims.expiresInSec}s`)
    .sign(privateKey);
}

async function readKeyFile(path: string): Promise<DevIssuerKey | undefined> {
  let text: string;
  try {
    const info = await stat(path);
    if (process.platform !== "win32" && (info.mode & 0o077) !== 0) {
      throw new BrokerError(
        "failed_precondition",
        "the dev issuer key file is readable by others; run chmod 600 on it",
      );
    }
    text = await readFile(path, "utf8");
  } catch (err) {
    if (errorCode(err) === "ENOENT") return undefined;
    if (err instanceof BrokerError) throw err;
    throw new BrokerError("failed_precondition", "cannot read the dev issuer key file", { cause: err });
  }
  return parseKeyFile(text);
}

function parseKeyFile(text: string): DevIssuerKey {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    // No cause: the JSON error would quote the private key.
    throw new BrokerError("failed_precondition", "the dev issuer key file is not valid JSON");
  }
  const file = parsed as { kid?: unknown; privateJwk?: Partial<Record<keyof JWK, unknown>> } | null;
  const jwk = file?.privateJwk;
  if (
    typeof file?.kid !== "string" ||
    jwk === undefined ||
    jwk.kty !== "RSA" ||
    typeof jwk.n !== "string" ||
    typeof jwk.e !== "string" ||
    typeof jwk.d !== "string"
  ) {
    throw new BrokerError("failed_precondition", "the dev issuer key file does not hold an RSA private key");
  }
  const privateJwk = { ...(jwk as JWK), kid: file.kid, alg: "RS256", use: "sig" };
  return { privateJwk, publicJwk: toPublicJwk(privateJwk), kid: file.kid };
}

/** Only the public members: a JWKS that leaked `d` would hand out the signing key. */
function toPublicJwk(jwk: JWK): JWK {
  const { kty, n, e, kid, alg, use } = jwk;
  const out: JWK = { kty: kty ?? "RSA", alg: alg ?? "RS256", use: use ?? "sig" };
  if (n !== undefined) out.n = n;
  if (e !== undefined) out.e = e;
  if (kid !== undefined) out.kid = kid;
  return out;
}

function discoveryDocument(issuer: string): Record<string, unknown> {
  return {
    issuer,
    jwks_uri: `${issuer}.well-known/jwks.json`,
    id_token_signing_alg_values_supported: ["RS256"],
    token_endpoint_auth_signing_alg_values_supported: ["RS256"],
    response_types_supported: ["token"],
    subject_types_supported: ["public"],
  };
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((err) => (err === undefined ? resolve() : reject(err)));
    // Keep-alive sockets would hold close() open until they time out.
    server.closeAllConnections();
  });
}

function errorCode(err: unknown): unknown {
  return typeof err === "object" && err !== null ? (err as { code?: unknown }).code : undefined;
}
