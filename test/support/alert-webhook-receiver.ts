import { randomBytes } from "node:crypto";
import { createServer } from "node:https";
import type { AddressInfo } from "node:net";
import { SIGNATURE_HEADER, verifyWebhookSignature } from "../../src/signals/webhook-signature.js";
import { createTestCertificates } from "./https-upstream.js";

/** One delivery as the receiver saw it, with the verdict of its signature check. */
export interface ReceivedAlert {
  readonly body: Buffer;
  readonly signature: string | undefined;
  readonly verified: boolean;
  /** False when the receiver answered 503 on purpose (see `failNext`). */
  readonly accepted: boolean;
}

/**
 * An operator's alert endpoint: real HTTPS on 127.0.0.1 (throwaway CA), verifying each delivery's
 * HMAC signature the way a receiver should, and answering `failFirst` deliveries with 503 so the
 * sender's retries are exercised.
 */
export interface AlertWebhookReceiver {
  readonly url: string;
  readonly ca: string;
  readonly secret: Buffer;
  readonly received: ReceivedAlert[];
  /** Verified, accepted deliveries, parsed. */
  alerts(): Array<Record<string, unknown>>;
  failNext(count: number): void;
  close(): Promise<void>;
}

export async function startAlertWebhookReceiver(): Promise<AlertWebhookReceiver> {
  const certs = createTestCertificates();
  // Text, as an operator's secret file holds it (the broker reads the file's trimmed text).
  const secret = Buffer.from(randomBytes(32).toString("hex"), "utf8");
  const received: ReceivedAlert[] = [];
  let failing = 0;
  const server = createServer({ key: certs.key, cert: certs.cert }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const header = req.headers[SIGNATURE_HEADER];
      const signature = Array.isArray(header) ? header[0] : header;
      const verified = verifyWebhookSignature(secret, body, signature, Math.floor(Date.now() / 1000));
      const accepted = failing === 0;
      received.push({ body, signature, verified, accepted });
      if (!accepted) {
        failing -= 1;
        res.writeHead(503).end();
        return;
      }
      res.writeHead(verified ? 204 : 401).end();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}/keybroker-alerts`,
    ca: certs.ca,
    secret,
    received,
    alerts: () =>
      received
        .filter((r) => r.verified && r.accepted)
        .map((r) => JSON.parse(r.body.toString("utf8")) as Record<string, unknown>),
    failNext(count) {
      failing = count;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
