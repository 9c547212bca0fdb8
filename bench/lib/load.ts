/** Latency and throughput of `total` calls issued by `concurrency` workers. */
export interface LoadResult {
  readonly calls: number;
  readonly errors: number;
  /** Failures by gRPC code (or error name), so a broken run explains itself. */
  readonly errorsByCode: Readonly<Record<string, number>>;
  readonly seconds: number;
  readonly callsPerSecond: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
}

export async function runLoad(
  total: number,
  concurrency: number,
  call: () => Promise<unknown>,
): Promise<LoadResult> {
  const latencies: number[] = [];
  let next = 0;
  let errors = 0;
  const errorsByCode: Record<string, number> = {};
  const started = process.hrtime.bigint();
  async function worker(): Promise<void> {
    while (next < total) {
      next += 1;
      const t0 = process.hrtime.bigint();
      try {
        await call();
      } catch (err) {
        errors += 1;
        const code = String((err as { code?: unknown }).code ?? (err as Error).name);
        errorsByCode[code] = (errorsByCode[code] ?? 0) + 1;
      }
      latencies.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return {
    calls: total,
    errors,
    errorsByCode,
    seconds,
    callsPerSecond: total / seconds,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
  };
}
