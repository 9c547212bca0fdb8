import type { Logger } from "../log/logger.js";

/**
 * Records "last used" times at most once per interval per id, off the request path: a
 * database write on every proxied call would double its cost for a timestamp nobody needs
 * to the millisecond. Failures are logged, never surfaced.
 */
export function createUsageRecorder(deps: {
  record: (id: string, at: Date) => Promise<void>;
  logger: Logger;
  intervalMs?: number;
  maxTracked?: number;
  now?: () => number;
}): (id: string) => void {
  const intervalMs = deps.intervalMs ?? 60_000;
  const maxTracked = deps.maxTracked ?? 100_000;
  const now = deps.now ?? Date.now;
  const lastRecorded = new Map<string, number>();
  return (id) => {
    const at = now();
    const last = lastRecorded.get(id);
    if (last !== undefined && at - last < intervalMs) return;
    if (lastRecorded.size >= maxTracked) lastRecorded.clear();
    lastRecorded.set(id, at);
    deps.record(id, new Date(at)).catch((err: unknown) => deps.logger.warn({ err }, "could not record use"));
  };
}
