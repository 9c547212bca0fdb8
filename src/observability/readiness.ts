/** What /readyz answers: ready, or the fixed reasons it is not. */
export interface ReadinessReport {
  readonly ready: boolean;
  /** Fixed phrases such as "migrations pending"; never an error message (it may hold a URL). */
  readonly reasons: readonly string[];
}

/** An async check run on every /readyz, e.g. a database ping. Rejecting means "not ready". */
export interface ReadinessProbe {
  /** The phrase reported while the probe fails, e.g. "database unreachable". */
  readonly reason: string;
  readonly check: (signal: AbortSignal) => Promise<void>;
}

export interface ReadinessOptions<Part extends string> {
  /** Each start-up step that must finish before traffic, with the reason shown until it does. */
  readonly parts: Readonly<Record<Part, string>>;
  readonly probes?: readonly ReadinessProbe[];
  /** A probe slower than this counts as failed; default 1 000 ms. */
  readonly probeTimeoutMs?: number;
}

/** Whether this replica should receive traffic; liveness is separate and always true while running. */
export interface Readiness<Part extends string> {
  markReady(part: Part): void;
  /** Takes a part out again (e.g. a dependency lost); the reason shows until markReady. */
  markNotReady(part: Part): void;
  /** One-way: from now on the replica reports "shutting down" so the balancer drains it. */
  markShuttingDown(): void;
  check(): Promise<ReadinessReport>;
}

const SHUTTING_DOWN = "shutting down";

export function createReadiness<Part extends string>(options: ReadinessOptions<Part>): Readiness<Part> {
  const parts = options.parts;
  const probes = options.probes ?? [];
  const probeTimeoutMs = options.probeTimeoutMs ?? 1_000;
  const pending = new Set<Part>(Object.keys(parts) as Part[]);
  let shuttingDown = false;

  // A probe's error is dropped on purpose: only its fixed reason leaves the process.
  async function failingProbes(): Promise<string[]> {
    const results = await Promise.all(
      probes.map((probe) =>
        withinDeadline(probe.check, probeTimeoutMs).then(
          () => undefined,
          () => probe.reason,
        ),
      ),
    );
    return results.filter((reason): reason is string => reason !== undefined);
  }

  return {
    markReady(part) {
      pending.delete(part);
    },
    markNotReady(part) {
      pending.add(part);
    },
    markShuttingDown() {
      shuttingDown = true;
    },
    async check() {
      if (shuttingDown) return { ready: false, reasons: [SHUTTING_DOWN] };
      const reasons = [...pending].map((part) => parts[part]);
      // Probes only once start-up is complete: a database ping before migrations says nothing new.
      if (reasons.length === 0) reasons.push(...(await failingProbes()));
      return { ready: reasons.length === 0, reasons };
    },
  };
}

// Settles with the check, or rejects at the deadline (aborting the check) if it is slower.
function withinDeadline(check: (signal: AbortSignal) => Promise<void>, timeoutMs: number): Promise<void> {
  const controller = new AbortController();
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      controller.abort();
      reject(new Error("readiness probe timed out"));
    }, timeoutMs);
    Promise.resolve()
      .then(() => check(controller.signal))
      .then(
        () => {
          clearTimeout(timer);
          resolve();
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
  });
}
