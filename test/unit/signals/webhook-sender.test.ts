import { afterEach, describe, expect, it } from "vitest";
import { createWebhookSender, type WebhookSender } from "../../../src/signals/webhook-sender.js";
import {
  type AlertWebhookReceiver,
  startAlertWebhookReceiver,
} from "../../support/alert-webhook-receiver.js";
import { captureLogs } from "../../support/captured-logs.js";

describe("alert webhook sender (real HTTPS receiver on 127.0.0.1)", () => {
  let receiver: AlertWebhookReceiver | undefined;
  let sender: WebhookSender | undefined;
  afterEach(async () => {
    await sender?.close();
    await receiver?.close();
  });

  async function setUp(options: { maxQueued?: number; maxAttempts?: number } = {}) {
    receiver = await startAlertWebhookReceiver();
    const outcomes: string[] = [];
    sender = createWebhookSender({
      url: new URL(receiver.url),
      secret: receiver.secret,
      ca: Buffer.from(receiver.ca),
      logger: captureLogs().logger,
      baseDelayMs: 5,
      maxDelayMs: 20,
      onDelivery: (o) => outcomes.push(o),
      ...options,
    });
    return { receiver, sender, outcomes };
  }

  it("H116 retries a refused delivery with backoff until the receiver accepts it, signing every attempt", async () => {
    const { receiver, sender, outcomes } = await setUp();
    receiver.failNext(3);

    expect(sender.send(Buffer.from('{"signal":"probing"}'))).toBe(true);
    await sender.idle();

    expect(receiver.received.map((r) => [r.verified, r.accepted])).toEqual([
      [true, false],
      [true, false],
      [true, false],
      [true, true],
    ]);
    expect(receiver.alerts()).toEqual([{ signal: "probing" }]);
    expect(outcomes).toEqual(["delivered"]);
  });

  it("H116 gives up after its attempts and reports the delivery as failed", async () => {
    const { receiver, sender, outcomes } = await setUp({ maxAttempts: 2 });
    receiver.failNext(5);

    sender.send(Buffer.from("{}"));
    await sender.idle();

    expect(receiver.received).toHaveLength(2);
    expect(outcomes).toEqual(["failed"]);
  });

  it("H116 bounds its queue: past it a delivery is dropped, never buffered without limit", async () => {
    const { sender, outcomes } = await setUp({ maxQueued: 2 });

    const accepted = [1, 2, 3, 4].map((i) => sender.send(Buffer.from(`{"n":${i}}`)));
    await sender.idle();

    expect(accepted).toEqual([true, true, false, false]);
    expect(outcomes.filter((o) => o === "dropped")).toHaveLength(2);
    expect(outcomes.filter((o) => o === "delivered")).toHaveLength(2);
  });
});
