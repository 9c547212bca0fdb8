import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { signWebhookBody, verifyWebhookSignature } from "../../../src/signals/webhook-signature.js";

const SECRET = Buffer.from("0123456789abcdef0123456789abcdef");
const BODY = Buffer.from('{"signal":"probing","observed":21}');
const T = 1_900_000_000;

describe("alert webhook signature", () => {
  it("H115 is t=<ts>,v1=<hex HMAC-SHA256 over '<ts>.' and the exact body>", () => {
    const expected = createHmac("sha256", SECRET).update(`${T}.`).update(BODY).digest("hex");

    expect(signWebhookBody(SECRET, BODY, T)).toBe(`t=${T},v1=${expected}`);
  });

  it("H115 verifies a fresh signature and refuses a changed body, another secret or a replay past the tolerance", () => {
    const header = signWebhookBody(SECRET, BODY, T);

    expect(verifyWebhookSignature(SECRET, BODY, header, T + 10)).toBe(true);
    expect(verifyWebhookSignature(SECRET, Buffer.from(`${BODY.toString()} `), header, T)).toBe(false);
    expect(verifyWebhookSignature(Buffer.from("another secret, 32 bytes long!!!"), BODY, header, T)).toBe(
      false,
    );
    expect(verifyWebhookSignature(SECRET, BODY, header, T + 301)).toBe(false);
    // Moving the timestamp forward to pass the window breaks the MAC, which covers it.
    expect(verifyWebhookSignature(SECRET, BODY, header.replace(`t=${T}`, `t=${T + 600}`), T + 600)).toBe(
      false,
    );
    expect(verifyWebhookSignature(SECRET, BODY, undefined, T)).toBe(false);
  });
});
