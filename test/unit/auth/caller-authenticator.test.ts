import { createHash } from "node:crypto";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import type { CallerKeyLookup, CallerKeyRecord } from "../../../src/auth/caller-authenticator.js";
import { createCallerAuthenticator } from "../../../src/auth/caller-authenticator.js";
import { generateCallerKey } from "../../../src/auth/caller-key-format.js";
import type { CallerScope } from "../../../src/auth/identity.js";
import { BrokerError } from "../../../src/errors.js";
import { brokerErrorOf } from "../../support/broker-errors.js";

const T0 = Date.UTC(2030, 0, 1);

type MutableRecord = { -readonly [K in keyof CallerKeyRecord]: CallerKeyRecord[K] };

/** An in-memory key table that counts lookups. */
function keyTable() {
  const rows = new Map<string, MutableRecord>();
  let lookups = 0;
  const lookup: CallerKeyLookup = {
    async findByHash(hash) {
      lookups++;
      return rows.get(hash.toString("hex"));
    },
  };
  return {
    lookup,
    lookups: () => lookups,
    add(scopes: readonly string[], fields: Partial<MutableRecord> = {}) {
      const { key, hash } = generateCallerKey();
      const record: MutableRecord = {
        id: `key-${rows.size + 1}`,
        name: "main app",
        keyHash: hash,
        scopes,
        expiresAt: null,
        revokedAt: null,
        clientCertSha256: null,
        suspendedAt: null,
        ...fields,
      };
      rows.set(hash.toString("hex"), record);
      return { key, record };
    },
  };
}

describe("caller authenticator", () => {
  it("authenticates a valid key with the required scope", async () => {
    const table = keyTable();
    const { key } = table.add(["secrets:read", "proxy:call", "not-a-scope"]);
    const caller = await createCallerAuthenticator({ lookup: table.lookup }).authenticate(key, "proxy:call");
    expect(caller.keyId).toBe("key-1");
    expect(caller.name).toBe("main app");
    expect([...caller.scopes].sort()).toEqual(["proxy:call", "secrets:read"]);
  });

  it("answers UNAUTHENTICATED 'invalid caller key' for a missing or unknown key", async () => {
    const table = keyTable();
    const auth = createCallerAuthenticator({ lookup: table.lookup });
    const missing = await brokerErrorOf(auth.authenticate(undefined, "secrets:read"));
    const unknown = await brokerErrorOf(auth.authenticate(generateCallerKey().key, "secrets:read"));
    for (const err of [missing, unknown]) {
      expect(err).toMatchObject({ code: "unauthenticated", message: "invalid caller key" });
    }
    expect(table.lookups()).toBe(1);
  });

  it("B17 rejects a bad checksum or malformed key before any database lookup", async () => {
    const table = keyTable();
    const { key } = table.add(["secrets:read"]);
    const auth = createCallerAuthenticator({ lookup: table.lookup });
    const badChecksum = `${key.slice(0, -1)}${key.endsWith("0") ? "1" : "0"}`;
    for (const raw of [badChecksum, "", "kbk_short", `${key} `, "Bearer x"]) {
      const err = await brokerErrorOf(auth.authenticate(raw, "secrets:read"));
      expect(err).toMatchObject({ code: "unauthenticated", message: "invalid caller key" });
    }
    expect(table.lookups()).toBe(0);
  });

  it("B18 compares the stored hash itself and rejects a record for another key", async () => {
    const table = keyTable();
    const { record: victim } = table.add(["admin"]);
    const { key: attackerKey } = generateCallerKey();
    // A lookup that matches loosely (e.g. by prefix) must not be enough on its own.
    const sloppy: CallerKeyLookup = { findByHash: async () => victim };
    const err = await brokerErrorOf(
      createCallerAuthenticator({ lookup: sloppy }).authenticate(attackerKey, "admin"),
    );
    expect(err.code).toBe("unauthenticated");
  });

  it("B18 rejects a stored hash of another length without throwing a RangeError", async () => {
    const { key } = generateCallerKey();
    const truncated: CallerKeyLookup = {
      findByHash: async (hash) => ({
        id: "k",
        name: "n",
        keyHash: hash.subarray(0, 16),
        scopes: ["admin"],
        expiresAt: null,
        revokedAt: null,
        suspendedAt: null,
        clientCertSha256: null,
      }),
    };
    const err = await brokerErrorOf(
      createCallerAuthenticator({ lookup: truncated }).authenticate(key, "admin"),
    );
    expect(err).toBeInstanceOf(BrokerError);
    expect(err.code).toBe("unauthenticated");
  });

  it("B20 rejects a key on the very next call after it is revoked (no stale window)", async () => {
    const table = keyTable();
    const { key, record } = table.add(["secrets:read"]);
    const auth = createCallerAuthenticator({ lookup: table.lookup, now: () => T0 });
    await expect(auth.authenticate(key, "secrets:read")).resolves.toBeDefined();
    record.revokedAt = new Date(T0);
    expect(await brokerErrorOf(auth.authenticate(key, "secrets:read"))).toMatchObject({
      code: "unauthenticated",
      message: "invalid caller key",
    });
  });

  it("H121 refuses a suspended key on the very next call, exactly like a revoked one (reason only in cause)", async () => {
    const table = keyTable();
    const { key, record } = table.add(["proxy:call"]);
    const auth = createCallerAuthenticator({ lookup: table.lookup, now: () => T0 });
    await expect(auth.authenticate(key, "proxy:call")).resolves.toBeDefined();

    record.suspendedAt = new Date(T0);
    const err = await brokerErrorOf(auth.authenticate(key, "proxy:call"));

    expect(err).toMatchObject({
      code: "unauthenticated",
      message: "invalid caller key",
      reason: "caller_key_invalid",
    });
    expect(String((err.cause as Error).message)).toContain("suspended");
    record.suspendedAt = null;
    await expect(auth.authenticate(key, "proxy:call")).resolves.toBeDefined();
  });

  it("H121 refuses a key this replica holds suspended before its row says so (fail closed)", async () => {
    const table = keyTable();
    const { key, record } = table.add(["proxy:call"]);
    const held = new Set<string>([record.id]);
    const auth = createCallerAuthenticator({ lookup: table.lookup, isSuspensionHeld: (id) => held.has(id) });

    expect((await brokerErrorOf(auth.authenticate(key, "proxy:call"))).code).toBe("unauthenticated");
    held.clear();
    await expect(auth.authenticate(key, "proxy:call")).resolves.toBeDefined();
  });

  it("L264 liveness at-audit: a seen key's immutable parts come from memory, marked pending; the default mode reads every call", async () => {
    const table = keyTable();
    const { key, record } = table.add(["proxy:call"], { expiresAt: new Date(T0 + 1_000) });
    let now = T0;
    const auth = createCallerAuthenticator({ lookup: table.lookup, now: () => now });
    const atAudit = { liveness: "at-audit" } as const;
    // Never seen: read, and live a moment ago, so nothing is pending.
    expect((await auth.authenticate(key, "proxy:call", undefined, atAudit)).livenessPending).toBeUndefined();
    expect(table.lookups()).toBe(1);
    // Seen: no read; its revocation is for the started row's statement to check.
    record.revokedAt = new Date(T0);
    const cached = await auth.authenticate(key, "proxy:call", undefined, atAudit);
    expect(cached).toMatchObject({ keyId: record.id, livenessPending: true });
    expect(table.lookups()).toBe(1);
    // Without the option every call reads, and the revocation holds at once (B20).
    expect((await brokerErrorOf(auth.authenticate(key, "proxy:call"))).code).toBe("unauthenticated");
    expect(table.lookups()).toBe(2);
    // The refused read dropped the key from memory: the next at-audit call reads and refuses too.
    expect((await brokerErrorOf(auth.authenticate(key, "proxy:call", undefined, atAudit))).code).toBe(
      "unauthenticated",
    );
    expect(table.lookups()).toBe(3);
    // An expiry known in memory is still enforced from its millisecond, without a read.
    record.revokedAt = null;
    await auth.authenticate(key, "proxy:call");
    now = T0 + 1_000;
    expect((await brokerErrorOf(auth.authenticate(key, "proxy:call", undefined, atAudit))).code).toBe(
      "unauthenticated",
    );
    // forget() sends the next call to the database.
    now = T0;
    await auth.authenticate(key, "proxy:call");
    const reads = table.lookups();
    auth.forget(record.id);
    await auth.authenticate(key, "proxy:call", undefined, atAudit);
    expect(table.lookups()).toBe(reads + 1);
  });

  it("B20 rejects a key from the millisecond it expires", async () => {
    const table = keyTable();
    const { key } = table.add(["secrets:read"], { expiresAt: new Date(T0 + 1_000) });
    let now = T0 + 999;
    const auth = createCallerAuthenticator({ lookup: table.lookup, now: () => now });
    await expect(auth.authenticate(key, "secrets:read")).resolves.toBeDefined();
    now = T0 + 1_000;
    expect((await brokerErrorOf(auth.authenticate(key, "secrets:read"))).code).toBe("unauthenticated");
  });

  it("treats a revocation dated in the future as revoked", async () => {
    const table = keyTable();
    const { key } = table.add(["secrets:read"], { revokedAt: new Date(T0 + 86_400_000) });
    const auth = createCallerAuthenticator({ lookup: table.lookup, now: () => T0 });
    expect((await brokerErrorOf(auth.authenticate(key, "secrets:read"))).code).toBe("unauthenticated");
  });

  it.each<[CallerScope, readonly string[]]>([
    ["admin", ["proxy:call"]],
    ["secrets:write", ["proxy:call"]],
    ["secrets:write", ["secrets:read"]],
    ["proxy:call", []],
  ])("B21 answers PERMISSION_DENIED for %s with scopes %j", async (required, scopes) => {
    const table = keyTable();
    const { key } = table.add(scopes);
    const err = await brokerErrorOf(
      createCallerAuthenticator({ lookup: table.lookup }).authenticate(key, required),
    );
    expect(err.code).toBe("permission_denied");
  });

  it("never puts the key in an error or its cause", async () => {
    const table = keyTable();
    const { key, record } = table.add(["secrets:read"]);
    record.revokedAt = new Date(T0);
    const auth = createCallerAuthenticator({ lookup: table.lookup });
    const broken = `${key.slice(0, -1)}${key.endsWith("0") ? "1" : "0"}`;
    for (const raw of [key, broken]) {
      const err = await brokerErrorOf(auth.authenticate(raw, "secrets:read"));
      expect(inspect(err, { depth: 10 })).not.toContain(key.slice(4, 36));
    }
  });

  it("reports a failing key store as UNAVAILABLE", async () => {
    const failing: CallerKeyLookup = {
      findByHash: async () => {
        throw new Error("connection terminated");
      },
    };
    const err = await brokerErrorOf(
      createCallerAuthenticator({ lookup: failing }).authenticate(generateCallerKey().key, "admin"),
    );
    expect(err).toMatchObject({ code: "unavailable", message: "caller key store unavailable" });
  });

  describe("B22 client certificate binding", () => {
    const certA = createHash("sha256").update("client certificate A").digest();
    const certB = createHash("sha256").update("client certificate B").digest();

    it("B22 accepts a bound key presented over a connection with exactly its certificate", async () => {
      const table = keyTable();
      const { key } = table.add(["secrets:read"], { clientCertSha256: certA });
      const auth = createCallerAuthenticator({ lookup: table.lookup });
      const caller = await auth.authenticate(key, "secrets:read", { clientCertSha256: Buffer.from(certA) });
      expect(caller.keyId).toBe("key-1");
    });

    it("B22 answers 'invalid caller key' for a bound key with another, a truncated or no certificate", async () => {
      const table = keyTable();
      const { key } = table.add(["secrets:read"], { clientCertSha256: certA });
      const auth = createCallerAuthenticator({ lookup: table.lookup });
      const attempts = [
        auth.authenticate(key, "secrets:read", { clientCertSha256: certB }),
        auth.authenticate(key, "secrets:read", { clientCertSha256: certA.subarray(0, 16) }),
        auth.authenticate(key, "secrets:read", { clientCertSha256: undefined }),
        auth.authenticate(key, "secrets:read"),
      ];
      for (const attempt of attempts) {
        const err = await brokerErrorOf(attempt);
        expect(err).toMatchObject({ code: "unauthenticated", message: "invalid caller key" });
      }
    });

    it("B22 refuses a bound key without its certificate before revealing the key's scopes", async () => {
      const table = keyTable();
      const { key } = table.add(["proxy:call"], { clientCertSha256: certA });
      const err = await brokerErrorOf(
        createCallerAuthenticator({ lookup: table.lookup }).authenticate(key, "admin", {
          clientCertSha256: certB,
        }),
      );
      expect(err.code).toBe("unauthenticated");
    });

    it("B22 does not mark a bound key used when its certificate is missing", async () => {
      const table = keyTable();
      const { key } = table.add(["secrets:read"], { clientCertSha256: certA });
      const marked: string[] = [];
      const auth = createCallerAuthenticator({
        lookup: table.lookup,
        markUsed: (id) => void marked.push(id),
      });
      await brokerErrorOf(auth.authenticate(key, "secrets:read", { clientCertSha256: undefined }));
      expect(marked).toEqual([]);
    });

    it("B22 accepts an unbound key with or without a client certificate, without reading it", async () => {
      const table = keyTable();
      const { key } = table.add(["secrets:read"]);
      const auth = createCallerAuthenticator({ lookup: table.lookup });
      let reads = 0;
      const transport = {
        get clientCertSha256() {
          reads++;
          return certB;
        },
      };
      await expect(auth.authenticate(key, "secrets:read", transport)).resolves.toHaveProperty(
        "keyId",
        "key-1",
      );
      await expect(auth.authenticate(key, "secrets:read")).resolves.toHaveProperty("keyId", "key-1");
      // The fingerprint costs a certificate parse per call; unbound keys must not pay for it.
      expect(reads).toBe(0);
    });
  });

  describe("last-used marking", () => {
    it("marks a key used at most once per interval", async () => {
      const table = keyTable();
      const { key } = table.add(["secrets:read"]);
      const marked: string[] = [];
      let now = T0;
      const auth = createCallerAuthenticator({
        lookup: table.lookup,
        now: () => now,
        markUsed: (id) => {
          marked.push(id);
        },
        markUsedIntervalMs: 60_000,
      });
      for (let i = 0; i < 5; i++) await auth.authenticate(key, "secrets:read");
      now += 59_999;
      await auth.authenticate(key, "secrets:read");
      expect(marked).toEqual(["key-1"]);
      now += 1;
      await auth.authenticate(key, "secrets:read");
      expect(marked).toEqual(["key-1", "key-1"]);
    });

    it("does not mark a key that failed to authenticate", async () => {
      const table = keyTable();
      const { key, record } = table.add(["secrets:read"]);
      record.revokedAt = new Date(T0);
      const marked: string[] = [];
      const auth = createCallerAuthenticator({
        lookup: table.lookup,
        markUsed: (id) => void marked.push(id),
      });
      await brokerErrorOf(auth.authenticate(key, "secrets:read"));
      expect(marked).toEqual([]);
    });

    it("never fails the call when markUsed throws or rejects", async () => {
      const table = keyTable();
      const { key: a } = table.add(["secrets:read"]);
      const { key: b } = table.add(["secrets:read"]);
      const throwing = createCallerAuthenticator({
        lookup: table.lookup,
        markUsed: () => {
          throw new Error("db down");
        },
      });
      const rejecting = createCallerAuthenticator({
        lookup: table.lookup,
        markUsed: async () => {
          throw new Error("db down");
        },
      });
      await expect(throwing.authenticate(a, "secrets:read")).resolves.toHaveProperty("keyId", "key-1");
      await expect(rejecting.authenticate(b, "secrets:read")).resolves.toHaveProperty("keyId", "key-2");
    });
  });
});

describe("caller authenticator: refusal reasons", () => {
  it("gives a missing key the reason caller_key_missing", async () => {
    const auth = createCallerAuthenticator({ lookup: keyTable().lookup });
    expect((await brokerErrorOf(auth.authenticate(undefined, "secrets:read"))).reason).toBe(
      "caller_key_missing",
    );
  });

  it("B20 gives a malformed, unknown, revoked, expired or wrongly-bound key the one reason caller_key_invalid", async () => {
    const table = keyTable();
    const { key: revoked } = table.add(["secrets:read"], { revokedAt: new Date(T0) });
    const { key: expired } = table.add(["secrets:read"], { expiresAt: new Date(T0) });
    const { key: bound } = table.add(["secrets:read"], { clientCertSha256: Buffer.alloc(32, 1) });
    const auth = createCallerAuthenticator({ lookup: table.lookup, now: () => T0 });
    const attempts = [
      auth.authenticate("kb_live_not-a-key", "secrets:read"),
      auth.authenticate(generateCallerKey().key, "secrets:read"),
      auth.authenticate(revoked, "secrets:read"),
      auth.authenticate(expired, "secrets:read"),
      auth.authenticate(bound, "secrets:read", { clientCertSha256: Buffer.alloc(32, 2) }),
      auth.authenticate(bound, "secrets:read"),
    ];
    for (const attempt of attempts) {
      expect(await brokerErrorOf(attempt)).toMatchObject({
        code: "unauthenticated",
        message: "invalid caller key",
        reason: "caller_key_invalid",
      });
    }
  });

  it("gives a key without the required scope the reason caller_key_scope_missing", async () => {
    const table = keyTable();
    const { key } = table.add(["secrets:read"]);
    const auth = createCallerAuthenticator({ lookup: table.lookup });
    expect(await brokerErrorOf(auth.authenticate(key, "proxy:call"))).toMatchObject({
      code: "permission_denied",
      reason: "caller_key_scope_missing",
    });
  });
});
