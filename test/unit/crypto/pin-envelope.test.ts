import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  decodePinEnvelope,
  isPinEnvelope,
  openWithPin,
  sealWithPin,
} from "../../../src/crypto/pin-envelope.js";
import { brokerCodeOf } from "../../support/broker-errors.js";

const KDF = { logN: 15 };

async function sealed(pin = "correct horse 1234") {
  const dataKey = randomBytes(32);
  const share = randomBytes(32);
  const userRef = randomBytes(32);
  const wrappedShare = randomBytes(150);
  const envelope = await sealWithPin({
    dataKey,
    share,
    wrappedShare,
    pin,
    userRef,
    dataKeyVersion: 1,
    kdf: KDF,
  });
  return { dataKey, share, userRef, wrappedShare, envelope };
}

describe("PIN envelope (issue 14 item 4)", () => {
  it("I153 opens the data key only with the share AND the right PIN, bound to the user and key version", async () => {
    const { dataKey, share, userRef, wrappedShare, envelope } = await sealed();
    const decoded = decodePinEnvelope(envelope);
    expect(isPinEnvelope(envelope)).toBe(true);
    expect(decoded.wrappedShare).toEqual(wrappedShare);
    expect(decoded.logN).toBe(15);
    const base = { envelope: decoded, share, pin: "correct horse 1234", userRef, dataKeyVersion: 1 };

    expect(await openWithPin(base)).toEqual(dataKey);
    expect(await openWithPin({ ...base, pin: "correct horse 1235" })).toBeUndefined();
    expect(await openWithPin({ ...base, share: randomBytes(32) })).toBeUndefined();
    expect(await openWithPin({ ...base, userRef: randomBytes(32) })).toBeUndefined();
    expect(await openWithPin({ ...base, dataKeyVersion: 2 })).toBeUndefined();
  });

  it("I153 the envelope holds neither the data key, the share nor the PIN, and tampering is data_loss or a failed open", async () => {
    const { dataKey, share, userRef, envelope } = await sealed("pin-never-stored-42");
    expect(envelope.includes(dataKey)).toBe(false);
    expect(envelope.includes(share)).toBe(false);
    expect(envelope.includes(Buffer.from("pin-never-stored-42"))).toBe(false);

    const flipped = Buffer.from(envelope);
    flipped[flipped.length - 20] = (flipped[flipped.length - 20] ?? 0) ^ 1;
    const opened = await openWithPin({
      envelope: decodePinEnvelope(flipped),
      share,
      pin: "pin-never-stored-42",
      userRef,
      dataKeyVersion: 1,
    });
    expect(opened).toBeUndefined();
    expect(brokerCodeOf(() => decodePinEnvelope(envelope.subarray(0, envelope.length - 1)))).toBe(
      "data_loss",
    );
    const weak = Buffer.from(envelope);
    weak[4] = 10; // a cost below the floor is refused, not used
    expect(brokerCodeOf(() => decodePinEnvelope(weak))).toBe("data_loss");
  });

  it("I153 a keyring-wrapped key (AWS or local) is never mistaken for a PIN envelope", () => {
    expect(isPinEnvelope(Buffer.from([0x01, 0x02, 0x02, 0x00, ...randomBytes(150)]))).toBe(false);
    expect(isPinEnvelope(randomBytes(3))).toBe(false);
  });
});
