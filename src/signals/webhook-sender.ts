import { rootCertificates } from "node:tls";
import { Agent, request } from "undici";
import type { Logger } from "../log/logger.js";
import { SIGNATURE_HEADER, signWebhookBody } from "./webhook-signature.js";

export interface WebhookSenderOptions {
  /** The operator's endpoint (https; http on loopback only with the explicit relaxation, in config). */
  readonly url: URL;
  readonly secret: Buffer;
  /** A private CA to trust besides the public roots (never a switch to turn checks off). */
  readonly ca?: Buffer | undefined;
  readonly logger: Logger;
  /** Deliveries waiting at once; past it the newest is dropped and logged (alerts are also audited). */
  readonly maxQueued?: number;
  readonly maxAttempts?: number;
  /** First retry delay; doubles each attempt, capped at `maxDelayMs`, with full jitter. */
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  readonly attemptTimeoutMs?: number;
  /** Epoch ms, for the signature timestamp. */
  readonly now?: () => number;
  readonly random?: () => number;
  /** Told about each delivery's fate (tests, metrics). */
  readonly onDelivery?: (outcome: "delivered" | "dropped" | "failed") => void;
}

/** Delivers signed alert bodies to one URL, in the background, retrying with backoff. */
export interface WebhookSender {
  /** Queues `body` (never blocks, never throws); returns false when the queue was full. */
  send(body: Buffer): boolean;
  /** Settles when nothing is queued or in flight (tests). */
  idle(): Promise<void>;
  /** Stops retrying, waits briefly for the delivery in flight, then drops what is left. */
  close(): Promise<void>;
}

interface Delivery {
  readonly body: Buffer;
  attempts: number;
}

const DEFAULTS = {
  maxQueued: 1_000,
  maxAttempts: 8,
  baseDelayMs: 500,
  maxDelayMs: 60_000,
  attemptTimeoutMs: 5_000,
};
const CLOSE_GRACE_MS = 1_000;

/** 408, 425, 429 and 5xx are worth another try; any other 4xx means the request itself is wrong. */
function retryable(status: number): boolean {
  return status === 408 || status === 425 || status === 429 || status >= 500;
}

export function createWebhookSender(options: WebhookSenderOptions): WebhookSender {
  const o = { ...DEFAULTS, ...options };
  const now = options.now ?? Date.now;
  const random = options.random ?? Math.random;
  const agent = new Agent({
    connect: options.ca === undefined ? {} : { ca: [...rootCertificates, options.ca.toString("utf8")] },
  });
  const queue: Delivery[] = [];
  let running: Promise<void> | undefined;
  let closed = false;
  let wake: (() => void) | undefined;
  const stopping = new AbortController();

  async function attempt(delivery: Delivery): Promise<"delivered" | "retry" | "failed"> {
    const signature = signWebhookBody(o.secret, delivery.body, Math.floor(now() / 1000));
    try {
      const response = await request(o.url, {
        method: "POST",
        dispatcher: agent,
        headers: { "content-type": "application/json", [SIGNATURE_HEADER]: signature },
        body: delivery.body,
        signal: AbortSignal.any([stopping.signal, AbortSignal.timeout(o.attemptTimeoutMs)]),
      });
      await response.body.dump();
      if (response.statusCode >= 200 && response.statusCode < 300) return "delivered";
      o.logger.warn({ status: response.statusCode }, "alert webhook refused a delivery");
      return retryable(response.statusCode) ? "retry" : "failed";
    } catch (err) {
      o.logger.warn({ err }, "alert webhook delivery failed");
      return "retry";
    }
  }

  function backoff(attempts: number): Promise<void> {
    // Full jitter: replicas retrying after the same outage do not all arrive at once.
    const cap = Math.min(o.maxDelayMs, o.baseDelayMs * 2 ** (attempts - 1));
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.floor(random() * cap));
      wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  async function drain(): Promise<void> {
    for (let delivery = queue[0]; delivery !== undefined && !closed; delivery = queue[0]) {
      delivery.attempts += 1;
      const result = await attempt(delivery);
      if (result === "retry" && delivery.attempts < o.maxAttempts && !closed) {
        await backoff(delivery.attempts);
        continue;
      }
      queue.shift();
      o.onDelivery?.(result === "delivered" ? "delivered" : "failed");
      if (result !== "delivered") {
        o.logger.error({ attempts: delivery.attempts }, "alert webhook gave up on a delivery");
      }
    }
  }

  function start(): void {
    running ??= drain().finally(() => {
      running = undefined;
      if (queue.length > 0 && !closed) start();
    });
  }

  return {
    send(body) {
      if (closed || queue.length >= o.maxQueued) {
        o.logger.error({ queued: queue.length }, "alert webhook queue full: delivery dropped");
        o.onDelivery?.("dropped");
        return false;
      }
      queue.push({ body, attempts: 0 });
      start();
      return true;
    },
    async idle() {
      while (running !== undefined) await running;
    },
    async close() {
      if (closed) return;
      closed = true;
      wake?.();
      const inFlight = running;
      if (inFlight !== undefined) {
        await Promise.race([inFlight, new Promise((resolve) => setTimeout(resolve, CLOSE_GRACE_MS).unref())]);
      }
      stopping.abort();
      if (queue.length > 0) {
        o.logger.warn({ dropped: queue.length }, "alert webhook closed with deliveries pending");
      }
      queue.length = 0;
      await agent.close();
    },
  };
}
