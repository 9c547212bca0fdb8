/**
 * The CPU a DPoP check adds to a call (issue 14: revocation and DPoP ≤ +30 µs CPU per call).
 * Measures TokenVerifier.verify on a cached token: unbound (the baseline), bound with a fresh
 * proof per call and the shared replay claim in memory (the check's own CPU), and bound with the
 * real claim (one INSERT ... ON CONFLICT DO NOTHING into Postgres). Proofs are minted before the
 * clock starts: minting is the client's (the browser's) cost, not the broker's.
 *
 *   npx tsx bench/tools/dpop-cost.ts            (N=3000, BENCH_DATABASE_URL=postgres://…)
 */
import { createDpopReplayGuard } from "../../src/auth/dpop-replay-guard.js";
import { createTokenVerifier, type DpopOptions } from "../../src/auth/token-verifier.js";
import { deriveUserRef } from "../../src/keys/user-ref.js";
import { createLogger } from "../../src/log/logger.js";
import { Redacted } from "../../src/log/redacted.js";
import { openDatabase } from "../../src/store/database.js";
import { claimDpopProofId } from "../../src/store/dpop-proof-ids.repository.js";
import { migrateToLatest } from "../../src/store/migrate.js";
import { createDpopKey } from "../../test/support/dpop-keys.js";
import { startTestIssuer } from "../../test/support/test-issuer.js";
import { createThrowawayDatabase } from "../../test/support/throwaway-database.js";

const N = Number(process.env.N ?? 3000);
const WARMUP = 300;
const ADMIN_URL = process.env.BENCH_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const ORIGIN = "https://keybroker.bench";
const RPC = "/keybroker.v1.ProxyService/Call";

async function cpuPerCall(name: string, fn: (i: number) => Promise<unknown>): Promise<number> {
  for (let i = 0; i < WARMUP; i++) await fn(i);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = WARMUP; i < WARMUP + N; i++) await fn(i);
  const c = process.cpuUsage(c0);
  const wall = performance.now() - t0;
  const cpu = (c.user + c.system) / N;
  console.log(
    `${name.padEnd(52)} ${cpu.toFixed(1).padStart(7)} µs CPU/call  ${((wall * 1000) / N).toFixed(0).padStart(6)} µs wall/call`,
  );
  return cpu;
}

const issuer = await startTestIssuer();
const throwaway = await createThrowawayDatabase(ADMIN_URL, "keybroker_dpop");
const database = await openDatabase(
  {
    kind: "postgres",
    url: new Redacted(throwaway.url),
    maxConnections: 4,
    connectTimeoutMs: 5000,
    statementTimeoutMs: 30000,
  },
  createLogger({ level: "silent" }),
);
try {
  await migrateToLatest(database.db);
  const pepper = Buffer.alloc(32, 3);
  const dpopWith = (claimShared: (hash: Buffer, until: Date) => Promise<boolean>): DpopOptions => ({
    required: false,
    htuOrigin: ORIGIN,
    maxAgeSec: 300,
    clockSkewSec: 5,
    replay: createDpopReplayGuard({ claimShared, maxLocalEntries: 100_000, now: Date.now }),
  });
  const verifierWith = (dpop: DpopOptions) =>
    createTokenVerifier({
      issuer: issuer.issuer,
      audience: issuer.audience,
      jwksUrl: issuer.jwksUrl,
      requiredPermission: issuer.permission,
      clockToleranceSec: 5,
      jwksCacheMaxAgeMs: 600_000,
      jwksCooldownMs: 1_000,
      jwksTimeoutMs: 2_000,
      cacheMaxEntries: 1_000,
      deriveUserRef: (iss, sub) => deriveUserRef(pepper, iss, sub),
      dpop,
    });

  const inMemory = dpopWith(async () => true);
  const unbound = await issuer.sign({}, { expiresInSec: 3_600 });
  const results: Record<string, number> = {};
  const baselineVerifier = verifierWith(inMemory);
  results.baseline = await cpuPerCall("cached token, not bound (baseline)", () =>
    baselineVerifier.verify(unbound, { rpcPath: RPC }),
  );

  for (const alg of ["ES256", "EdDSA"] as const) {
    const key = await createDpopKey(alg);
    const bound = await issuer.sign({ cnf: { jkt: key.jkt } }, { expiresInSec: 3_600 });
    const mint = async () => {
      const proofs: string[] = [];
      for (let i = 0; i < WARMUP + N; i++)
        proofs.push(await key.proof({ htu: `${ORIGIN}${RPC}`, accessToken: bound }));
      return proofs;
    };
    const memoryProofs = await mint();
    const memoryVerifier = verifierWith(inMemory);
    results[`${alg} memory`] = await cpuPerCall(
      `cached bound token + ${alg} proof, replay claim in memory`,
      (i) => memoryVerifier.verify(bound, { rpcPath: RPC, dpopProof: memoryProofs[i] }),
    );
    const pgProofs = await mint();
    const pgVerifier = verifierWith(
      dpopWith((hash, until) => claimDpopProofId(database.prepared, hash, until)),
    );
    results[`${alg} postgres`] = await cpuPerCall(
      `cached bound token + ${alg} proof, replay claim in Postgres`,
      (i) => pgVerifier.verify(bound, { rpcPath: RPC, dpopProof: pgProofs[i] }),
    );
  }
  const base = results.baseline ?? 0;
  console.log("\nadded by DPoP (µs CPU/call over the baseline):");
  for (const [name, cpu] of Object.entries(results)) {
    if (name !== "baseline") console.log(`  ${name.padEnd(16)} +${(cpu - base).toFixed(1)}`);
  }
} finally {
  await database.close();
  await throwaway.drop();
  await issuer.close();
}
