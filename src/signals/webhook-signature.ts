import { createHmac, timingSafeEqual } from "node:crypto";

/** The header that carries the signature of an alert webhook's body. */
export const SIGNATURE_HEADER = "x-keybroker-signature";

/**
 * `t=<unix seconds>,v1=<hex HMAC-SHA256 over "<t>.<exact body bytes>">`, as Stripe signs its
 * webhooks: the timestamp is inside the MAC, so a receiver that refuses old timestamps cannot be
 * fed a captured delivery again later.
 */
export function signWebhookBody(secret: Buffer, body: Buffer, timestampSec: number): string {
  return `t=${timestampSec},v1=${mac(secret, body, timestampSec).toString("hex")}`;
}

/**
 * Verifies a signature header for `body`: the MAC in constant time, and the timestamp within
 * `toleranceSec` of `nowSec`. What a receiver runs (the tests run it too).
 */
export function verifyWebhookSignature(
  secret: Buffer,
  body: Buffer,
  header: string | undefined,
  nowSec: number,
  toleranceSec = 300,
): boolean {
  const match = /^t=(\d{1,12}),v1=([0-9a-f]{64})$/.exec(header ?? "");
  if (match === null) return false;
  const timestampSec = Number(match[1]);
  if (Math.abs(nowSec - timestampSec) > toleranceSec) return false;
  const expected = mac(secret, body, timestampSec);
  return timingSafeEqual(expected, Buffer.from(match[2] ?? "", "hex"));
}

function mac(secret: Buffer, body: Buffer, timestampSec: number): Buffer {
  return createHmac("sha256", secret).update(`${timestampSec}.`).update(body).digest();
}
