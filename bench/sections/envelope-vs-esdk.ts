/**
 * Scenario 3: our envelope (src/crypto) vs the AWS Encryption SDK (@aws-crypto/client-node) on the
 * same payloads, same process, same run. Both sides use AES-256-GCM under a 256-bit data key that a
 * wrapping key protects; the SDK also derives a per-message key (HKDF) and commits to it.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  AlgorithmSuiteIdentifier,
  buildClient,
  CommitmentPolicy,
  getLocalCryptographicMaterialsCache,
  NodeCachingMaterialsManager,
  RawAesKeyringNode,
  RawAesWrappingSuiteIdentifier,
} from "@aws-crypto/client-node";
import { open, type SecretBinding, seal } from "../../src/crypto/envelope.js";
import { createDataKeyCache } from "../../src/keys/data-key-cache.js";
import { loadOrCreateLocalKeyring } from "../../src/keys/local-keyring.js";
import { createUserDataKeys, userKeyContext } from "../../src/keys/user-data-keys.js";
import { fmt, type SectionOptions, type SectionResult } from "../lib/report.js";

interface OpResult {
  readonly payload: string;
  readonly implementation: string;
  readonly op: "seal" | "open";
  readonly opsPerSecond: number;
  readonly cpuMicrosPerOp: number;
}

/** Sequential ops (each awaited, as a request would), after a warm-up; CPU of this process. */
async function time(
  iterations: number,
  op: () => unknown,
): Promise<{ opsPerSecond: number; cpuMicrosPerOp: number }> {
  for (let i = 0; i < Math.min(iterations, 500); i++) await op();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < iterations; i++) await op();
  const seconds = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  return { opsPerSecond: iterations / seconds, cpuMicrosPerOp: (cpu.user + cpu.system) / iterations };
}

function sameBytes(a: Uint8Array, b: Uint8Array, what: string): void {
  if (!Buffer.from(a).equals(Buffer.from(b)))
    throw new Error(`${what}: decrypted bytes differ from the input`);
}

export async function runEnvelopeVsEsdk(options: SectionOptions): Promise<SectionResult> {
  const iterations = options.quick ? 300 : 5000;
  const dir = await mkdtemp(join(tmpdir(), "keybroker-bench-envelope-"));
  const results: OpResult[] = [];
  try {
    const keyring = await loadOrCreateLocalKeyring({ path: join(dir, "keyring.json"), nodeEnv: "test" });
    const userRef = randomBytes(32);
    const context = userKeyContext(userRef);
    const generated = await keyring.generateDataKey(context);
    const stored = {
      wrappedDataKey: generated.wrapped,
      masterKeyId: generated.keyId,
      dataKeyVersion: 1,
      encryptions: 0,
    };
    const userDataKeys = createUserDataKeys({
      keyring,
      cache: createDataKeyCache({ maxAgeMs: 600_000, maxUses: 1_000_000_000, maxEntries: 16 }),
    });
    const signal = new AbortController().signal;

    const esdk = buildClient(CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT);
    const esdkKeyring = new RawAesKeyringNode({
      keyName: "bench-key",
      keyNamespace: "bench",
      unencryptedMasterKey: new Uint8Array(randomBytes(32)),
      wrappingSuite: RawAesWrappingSuiteIdentifier.AES256_GCM_IV12_TAG16_NO_PADDING,
    });
    const caching = new NodeCachingMaterialsManager({
      backingMaterials: esdkKeyring,
      cache: getLocalCryptographicMaterialsCache(100),
      maxAge: 600_000,
      maxMessagesEncrypted: 1_000_000_000,
      partition: "bench",
    });
    // Our format is not signed (the broker both seals and opens), so the fair SDK suite is its
    // committing one without ECDSA; its default (signed) suite is shown for context.
    const unsigned = AlgorithmSuiteIdentifier.ALG_AES256_GCM_IV12_TAG16_HKDF_SHA512_COMMIT_KEY;
    const encryptionContext = { purpose: "bench", user: userRef.toString("hex") };

    for (const [label, size] of [
      ["64 B", 64],
      ["4 KiB", 4096],
    ] as const) {
      options.progress(`envelope: ${label}`);
      const plaintext = randomBytes(size);
      const binding: SecretBinding = {
        secretId: "00000000-0000-4000-8000-000000000000",
        userRef,
        provider: "bench",
        version: 1,
        part: "fields",
      };
      const add = (
        implementation: string,
        op: "seal" | "open",
        measured: { opsPerSecond: number; cpuMicrosPerOp: number },
      ) => results.push({ payload: label, implementation, op, ...measured });

      // Ours, as the proxy opens a secret: data key from the cache, AES-GCM open, key zeroed.
      const sealed = seal((await userDataKeys.unwrap(userRef, stored, signal)).key, plaintext, binding);
      sameBytes(
        open((await userDataKeys.unwrap(userRef, stored, signal)).key, sealed, binding),
        plaintext,
        "ours",
      );
      add(
        "ours, data key cached",
        "seal",
        await time(iterations, async () => {
          const { key } = await userDataKeys.unwrap(userRef, stored, signal);
          seal(key, plaintext, binding);
          key.fill(0);
        }),
      );
      add(
        "ours, data key cached",
        "open",
        await time(iterations, async () => {
          const { key } = await userDataKeys.unwrap(userRef, stored, signal);
          open(key, sealed, binding).fill(0);
          key.fill(0);
        }),
      );
      add(
        "ours, data key unwrapped every time (local keyring)",
        "open",
        await time(iterations, async () => {
          const { plaintext: key } = await keyring.decrypt(
            { wrapped: stored.wrappedDataKey, keyId: stored.masterKeyId },
            context,
          );
          open(key, sealed, binding).fill(0);
          key.fill(0);
        }),
      );

      for (const [implementation, materials, suiteId] of [
        ["AWS Encryption SDK, raw AES keyring", esdkKeyring, unsigned],
        ["AWS Encryption SDK, raw AES keyring + caching CMM", caching, unsigned],
        ["AWS Encryption SDK default suite (ECDSA-signed), caching CMM", caching, undefined],
      ] as const) {
        const encryptOptions = suiteId === undefined ? { encryptionContext } : { encryptionContext, suiteId };
        const { result: message } = await esdk.encrypt(materials, plaintext, encryptOptions);
        sameBytes((await esdk.decrypt(materials, message)).plaintext, plaintext, implementation);
        add(
          implementation,
          "seal",
          await time(iterations, () => esdk.encrypt(materials, plaintext, encryptOptions)),
        );
        add(implementation, "open", await time(iterations, () => esdk.decrypt(materials, message)));
      }
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }

  const opsOf = (payload: string, implementation: string, op: "seal" | "open") =>
    results.find((r) => r.payload === payload && r.implementation === implementation && r.op === op)
      ?.opsPerSecond ?? Number.NaN;
  const ratios = ["64 B", "4 KiB"].map((payload) => ({
    payload,
    ratio:
      opsOf(payload, "ours, data key cached", "open") /
      opsOf(payload, "AWS Encryption SDK, raw AES keyring + caching CMM", "open"),
  }));

  return {
    id: "envelope",
    title: "3. Envelope crypto vs the AWS Encryption SDK",
    tables: [
      {
        title: "seal / open, one at a time, same payloads, same process",
        columns: ["payload", "implementation", "op", "ops/s", "CPU µs/op"],
        rows: results.map((r) => [
          r.payload,
          r.implementation,
          r.op,
          fmt(r.opsPerSecond),
          fmt(r.cpuMicrosPerOp, 1),
        ]),
        notes: [
          `${iterations} ops per row after a warm-up; every implementation's output was decrypted and compared first.`,
          "SDK rows use its committing suite without signatures (ours has none) unless marked; the caching CMM caches data-key materials like our data-key cache.",
          `open ratio, ours (cached) / SDK (caching CMM): ${ratios.map((r) => `${r.payload} ×${fmt(r.ratio, 1)}`).join(", ")}`,
        ],
      },
    ],
    checks: ratios.map((r) => ({
      target: `envelope open ≥ 3× the SDK's decrypt with caching (${r.payload})`,
      measured: `×${fmt(r.ratio, 1)}`,
      met: r.ratio >= 3,
    })),
    errors: 0,
    data: { iterations, results },
  };
}
