import { fromBinary } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { retryDelayFromStatusDetails } from "../../src/api/error-info.js";
import { open } from "../../src/crypto/envelope.js";
import { decodePinEnvelope, isPinEnvelope, openWithPin } from "../../src/crypto/pin-envelope.js";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import { StatusSchema } from "../../src/gen/google/rpc/status_pb.js";
import { loadOrCreatePepper } from "../../src/keys/pepper.js";
import { pinShareContext, userKeyContext } from "../../src/keys/user-data-keys.js";
import { deriveUserRef } from "../../src/keys/user-ref.js";
import { createSecretForUseLookup } from "../../src/store/secrets.repository.js";
import { findUserKey } from "../../src/store/users.repository.js";
import { type BrokerHarness, type BrokerReplica, startBroker } from "../support/broker-harness.js";
import { asServiceError, type GrpcClients, unary, type WireMessage } from "../support/grpc-client.js";
import { createCanaryRegistry, makeCanary } from "../support/leak-sweep.js";
import { describeOnEachDatabase, dumpAllRows } from "../support/test-database.js";

const MAX_ATTEMPTS = 3;
const PIN_ENV = {
  KEYBROKER_PIN_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
  // No backoff between guesses, so the lockout is reached without waiting; the lockout is long.
  KEYBROKER_PIN_BACKOFF_MS: "0",
  KEYBROKER_PIN_LOCKOUT_MS: "600000",
  KEYBROKER_PIN_SCRYPT_LOG_N: "15",
};

// Every PIN the suite sends is a canary: none may appear in logs, rows, errors or metrics (I151).
const canaries = createCanaryRegistry();
const pinFor = (label: string) => canaries.register(`pin ${label}`, makeCanary(`pin${label}`));

interface Refusal {
  readonly code: number;
  readonly reason: string | undefined;
  readonly message: string;
  readonly retryAfterMs: number | undefined;
}

async function refusalOf(call: Promise<unknown>): Promise<Refusal | "ok"> {
  try {
    await call;
    return "ok";
  } catch (err) {
    const e = asServiceError(err);
    const bin = e.metadata.get("grpc-status-details-bin")[0];
    const info =
      bin instanceof Buffer
        ? fromBinary(StatusSchema, bin)
            .details.map((d) => anyUnpack(d, ErrorInfoSchema))
            .find((i) => i !== undefined)
        : undefined;
    return {
      code: e.code,
      reason: info?.reason,
      message: e.details,
      retryAfterMs: bin instanceof Buffer ? retryDelayFromStatusDetails(bin) : undefined,
    };
  }
}

describeOnEachDatabase("optional user PIN (issue 14 item 4, %s)", (kind) => {
  let broker: BrokerHarness;
  let other: BrokerReplica;
  let appKey: string;
  const errorsSeen: string[] = [];

  beforeAll(async () => {
    broker = await startBroker(kind, PIN_ENV);
    other = await broker.replica();
    appKey = (await broker.callerKey(["secrets:read", "secrets:write", "proxy:call", "session:end"])).key;
  }, 60_000);
  afterAll(async () => {
    await broker?.close();
  });

  const as = (token: string) => ({ callerKey: appKey, bearerToken: token });
  const list = (token: string, clients: GrpcClients = broker.clients) =>
    unary(clients.secrets, "ListSecrets", {}, as(token));
  const put = async (token: string, label: string): Promise<string> => {
    const { response } = await unary(
      broker.clients.secrets,
      "PutSecret",
      { provider: "test-upstream", label, fields: { token: broker.upstreamCredentials.bearer } },
      as(token),
    );
    return (response.secret as WireMessage).id as string;
  };
  const setPin = (token: string, pin: string, currentPin = "", clients: GrpcClients = broker.clients) =>
    unary(clients.pins, "SetPin", { pin, currentPin }, as(token));
  const unlock = (token: string, pin: string, clients: GrpcClients = broker.clients) =>
    unary(clients.pins, "UnlockSession", { pin }, as(token));
  const refused = async (call: Promise<unknown>) => {
    const r = await refusalOf(call);
    if (r !== "ok") errorsSeen.push(r.message);
    return r;
  };
  const locked = { code: status.FAILED_PRECONDITION, reason: "SESSION_LOCKED" };

  // A user with a PIN but no secret lists nothing without unlocking: there is nothing to open.
  it("I145 after SetPin, a new session's secret calls (list, put, proxy) are FAILED_PRECONDITION session_locked until it unlocks with the PIN", async () => {
    const sub = "auth0|pin-e2e-1";
    const pin = pinFor("one");
    const first = await broker.tokenFor(sub, { sid: "sid-1a" });
    const secretId = await put(first, "before the PIN");
    await setPin(first, pin);
    // The session that set the PIN stays unlocked.
    expect((await list(first)).response.secrets).toHaveLength(1);

    const second = await broker.tokenFor(sub, { sid: "sid-1b" });
    expect(await refused(list(second))).toMatchObject(locked);
    expect(await refused(put(second, "while locked"))).toMatchObject(locked);
    expect(
      await refused(
        unary(broker.clients.proxy, "Call", { secretId, method: "GET", path: "/ok" }, as(second)),
      ),
    ).toMatchObject(locked);

    await unlock(second, pin);
    expect((await list(second)).response.secrets).toHaveLength(1);
    const call = await unary(
      broker.clients.proxy,
      "Call",
      { secretId, method: "GET", path: "/ok" },
      as(second),
    );
    expect(call.response.status).toBe(200);
    // A secret stored after the PIN opens for the unlocked session.
    await put(second, "after the PIN");
    expect((await list(second)).response.secrets).toHaveLength(2);
  });

  it("I146 with the database and the keyring both in hand, a PIN user's secret cannot be opened without the PIN", async () => {
    const sub = "auth0|pin-e2e-attacker";
    const pin = pinFor("attacked");
    const token = await broker.tokenFor(sub, { sid: "sid-att" });
    const secretId = await put(token, "target");
    await setPin(token, pin);

    // The attacker: every row, and the broker's own keyring (KMS Decrypt with any context).
    const { db, prepared } = broker.database;
    const keyring = broker.app.keyring;
    const userRef = deriveUserRef(await loadOrCreatePepper(db, keyring), broker.issuer.issuer, sub);
    const sealed = await createSecretForUseLookup(prepared).find(userRef, secretId);
    if (sealed === undefined) throw new Error("the target secret is not in the database");
    const stored = await findUserKey(db, userRef);
    if (stored === undefined) throw new Error("the target user is not in the database");
    expect(isPinEnvelope(stored.wrappedDataKey)).toBe(true);
    const { secret } = sealed;
    const binding = {
      secretId,
      userRef,
      provider: secret.provider,
      version: secret.version,
      part: "fields" as const,
      headBound: secret.headMac !== null,
    };
    const opens = (key: Buffer) => {
      try {
        open(key, Buffer.from(secret.ciphertext), binding);
        return true;
      } catch {
        return false;
      }
    };

    // 1. The stored key as a plain keyring-wrapped data key: the KMS refuses it.
    await expect(
      keyring.decrypt({ wrapped: stored.wrappedDataKey, keyId: stored.masterKeyId }, userKeyContext(userRef)),
    ).rejects.toThrow();
    // 2. The KMS does give the share inside the envelope, but the share is not the data key...
    const envelope = decodePinEnvelope(stored.wrappedDataKey);
    const share = (
      await keyring.decrypt(
        { wrapped: envelope.wrappedShare, keyId: stored.masterKeyId },
        pinShareContext(userRef),
      )
    ).plaintext;
    expect(opens(share)).toBe(false);
    // 3. ...and with it the envelope does not open without the PIN (empty, common and near guesses).
    for (const guess of ["", "0000", "1234", `${pin}x`, pin.slice(0, -1)]) {
      const key = await openWithPin({
        envelope,
        share,
        pin: guess,
        userRef,
        dataKeyVersion: stored.dataKeyVersion,
      });
      expect(key).toBeUndefined();
    }
    // 4. A fresh broker on the same database and KMS, with a new session, is refused too.
    const fresh = await broker.tokenFor(sub, { sid: "sid-att-2" });
    expect(await refused(list(fresh, other.clients))).toMatchObject(locked);

    // Control: the same steps with the PIN do open it, so the refusals above are the PIN's doing.
    const dataKey = await openWithPin({
      envelope,
      share,
      pin,
      userRef,
      dataKeyVersion: stored.dataKeyVersion,
    });
    expect(dataKey).toBeInstanceOf(Buffer);
    expect(opens(dataKey as Buffer)).toBe(true);
  });

  it("I147 wrong PINs are PERMISSION_DENIED; after the configured attempts the user is locked out on every replica, even with the right PIN, and each refusal is audited", async () => {
    const sub = "auth0|pin-e2e-lockout";
    const pin = pinFor("lockout");
    const token = await broker.tokenFor(sub, { sid: "sid-lock-a" });
    await put(token, "behind the lockout");
    await setPin(token, pin);
    const session = await broker.tokenFor(sub, { sid: "sid-lock-b" });

    for (let i = 1; i < MAX_ATTEMPTS; i++) {
      const clients = i % 2 === 0 ? other.clients : broker.clients; // guesses spread over replicas
      expect(await refused(unlock(session, pinFor(`wrong${i}`), clients))).toMatchObject({
        code: status.PERMISSION_DENIED,
        reason: "PIN_WRONG",
      });
    }
    expect(await refused(unlock(session, pinFor("wrong-last"), other.clients))).toMatchObject({
      code: status.PERMISSION_DENIED,
    });
    for (const clients of [broker.clients, other.clients]) {
      const refusal = await refused(unlock(session, pin, clients));
      expect(refusal).toMatchObject({ code: status.RESOURCE_EXHAUSTED, reason: "PIN_LOCKED" });
      expect(refusal !== "ok" && refusal.retryAfterMs).toBeGreaterThan(0);
    }
    expect(await refused(list(session))).toMatchObject(locked);

    await broker.app.flushAudit();
    await other.app.flushAudit();
    const rows = await broker.database.db
      .selectFrom("audit_events")
      .selectAll()
      .where("action", "=", "pin.unlock")
      .where("outcome", "=", "denied")
      .execute();
    const userRef = deriveUserRef(
      await loadOrCreatePepper(broker.database.db, broker.app.keyring),
      broker.issuer.issuer,
      sub,
    );
    const mine = rows.filter((r) => Buffer.from(r.user_ref ?? []).equals(userRef));
    expect(mine.length).toBe(MAX_ATTEMPTS + 2);
    expect(JSON.stringify(mine.map((r) => r.detail))).toContain("pin_locked_out");
  });

  it("I148 changing the PIN needs the current one and re-wraps only the data key: secrets are untouched, the old PIN no longer unlocks, the new one does", async () => {
    const sub = "auth0|pin-e2e-change";
    const oldPin = pinFor("old");
    const newPin = pinFor("new");
    const token = await broker.tokenFor(sub, { sid: "sid-ch-a" });
    await put(token, "kept across the change");
    await setPin(token, oldPin);
    const before = await broker.database.db.selectFrom("secret_versions").select(["ciphertext"]).execute();

    expect(await refused(setPin(token, newPin))).toMatchObject({ code: status.FAILED_PRECONDITION });
    expect(await refused(setPin(token, newPin, pinFor("not-current")))).toMatchObject({
      code: status.PERMISSION_DENIED,
      reason: "PIN_WRONG",
    });
    await setPin(token, newPin, oldPin);

    const after = await broker.database.db.selectFrom("secret_versions").select(["ciphertext"]).execute();
    expect(after.map((r) => Buffer.from(r.ciphertext).toString("hex")).sort()).toEqual(
      before.map((r) => Buffer.from(r.ciphertext).toString("hex")).sort(),
    );
    const next = await broker.tokenFor(sub, { sid: "sid-ch-b" });
    expect(await refused(unlock(next, oldPin))).toMatchObject({ code: status.PERMISSION_DENIED });
    await unlock(next, newPin, other.clients);
    expect((await list(next, other.clients)).response.secrets).toHaveLength(1);
  });

  it("I149 another session of the same user must unlock separately, and so must a token without a sid", async () => {
    const sub = "auth0|pin-e2e-sessions";
    const pin = pinFor("sessions");
    const a = await broker.tokenFor(sub, { sid: "sid-s-a" });
    await put(a, "one session at a time");
    await setPin(a, pin);
    const sameSid = await broker.tokenFor(sub, { sid: "sid-s-a", iat: Math.floor(Date.now() / 1000) - 1 });
    expect((await list(sameSid)).response.secrets).toHaveLength(1);
    const noSid = await broker.tokenFor(sub);
    expect(await refused(list(noSid))).toMatchObject(locked);
    await unlock(noSid, pin);
    expect((await list(noSid)).response.secrets).toHaveLength(1);
    const anotherNoSid = await broker.tokenFor(sub, { iat: Math.floor(Date.now() / 1000) - 2 });
    expect(await refused(list(anotherNoSid))).toMatchObject(locked);
  });

  it("I150 logout drops the unlocked key: after EndOwnSessions a new login is locked until it unlocks again", async () => {
    const sub = "auth0|pin-e2e-logout";
    const pin = pinFor("logout");
    const token = await broker.tokenFor(sub, { sid: "sid-lo" });
    await put(token, "locked again after logout");
    await setPin(token, pin);
    await unary(broker.clients.sessions, "EndOwnSessions", {}, as(token));
    const relogin = await broker.tokenFor(sub, { sid: "sid-lo", iat: Math.floor(Date.now() / 1000) + 1 });
    expect(await refused(list(relogin))).toMatchObject(locked);
    await unlock(relogin, pin);
    expect((await list(relogin)).response.secrets).toHaveLength(1);
  });

  it("I152 a forgotten PIN: the user is crypto-shredded (ShredUser) and starts over without a PIN", async () => {
    const sub = "auth0|pin-e2e-forgot";
    const token = await broker.tokenFor(sub, { sid: "sid-f" });
    await put(token, "lost with the PIN");
    await setPin(token, pinFor("forgotten"));
    const adminKey = (await broker.callerKey(["admin"])).key;
    await unary(broker.clients.admin, "ShredUser", { subject: sub }, { callerKey: adminKey });
    const fresh = await broker.tokenFor(sub, { sid: "sid-f2", iat: Math.floor(Date.now() / 1000) + 1 });
    expect((await list(fresh)).response.secrets).toEqual([]);
    await put(fresh, "a new start");
    expect((await list(fresh)).response.secrets).toHaveLength(1);
  });

  describe("leaks", () => {
    it("I151 no PIN appears in the broker's logs, any table (audit rows included), error messages or metrics", async () => {
      await broker.app.flushAudit();
      await other.app.flushAudit();
      const metrics = await (await fetch(`${broker.opsUrl}/metrics`)).text();
      const hits = [
        ...canaries.scan("logs", broker.logs.text()),
        ...canaries.scan("database", await dumpAllRows(broker.database.db)),
        ...canaries.scan("errors", errorsSeen.join("\n")),
        ...canaries.scan("metrics", metrics),
      ];
      expect(canaries.canaries.length).toBeGreaterThan(5);
      expect(errorsSeen.length).toBeGreaterThan(5);
      expect(hits).toEqual([]);
    });
  });
});
