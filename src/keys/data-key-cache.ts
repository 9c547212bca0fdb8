import { isBrokerError } from "../errors.js";

/** Options bounding how long and how often an unwrapped data key is served from memory. */
export interface DataKeyCacheOptions {
  /** An entry is reloaded from the KMS once it is this old. */
  readonly maxAgeMs: number;
  /** An entry is served from the cache at most this many times, then reloaded. */
  readonly maxUses: number;
  /** Least recently used entries are evicted beyond this many. */
  readonly maxEntries: number;
  /**
   * An entry not used for this long is evicted (issue 14: an idle user's key leaves memory well
   * before `maxAgeMs`). Unset: only age and uses bound it.
   */
  readonly idleMs?: number | undefined;
  /** Clock in milliseconds; tests pass a fake one. */
  readonly now?: () => number;
}

export interface DataKeyCacheStats {
  readonly hits: number;
  readonly misses: number;
  readonly loads: number;
  readonly size: number;
}

/**
 * Unwrapped data keys held briefly in memory, so a busy user costs one KMS call per cache
 * period rather than one per request (SPEC §5, catalogue D46).
 */
export interface DataKeyCache {
  /**
   * The cached key, or the result of `load` (one load shared by concurrent callers). The
   * cache takes ownership of the buffer `load` returns. Every caller gets its own copy and
   * zeroes it when done.
   */
  getOrLoad(key: string, load: () => Promise<Buffer>): Promise<Buffer>;
  /** Forgets and zeroes an entry (user shredded, data key rotated). */
  delete(key: string): void;
  /** Forgets and zeroes every entry whose cache key matches (a user's logout); returns how many. */
  deleteWhere(matches: (key: string) => boolean): number;
  /** Forgets and zeroes every entry. */
  clear(): void;
  /** Zeroes and drops every expired entry; returns how many. For a periodic timer. */
  evictExpired(): number;
  stats(): DataKeyCacheStats;
}

interface Entry {
  readonly key: Buffer;
  readonly loadedAt: number;
  lastUsedAt: number;
  uses: number;
}

interface Waiter {
  readonly resolve: (key: Buffer) => void;
  readonly reject: (err: unknown) => void;
}

interface Flight {
  readonly waiters: Waiter[];
  /** Cleared by delete/clear, so a load already in flight does not re-cache a purged key. */
  cacheable: boolean;
}

function copyOf(source: Buffer): Buffer {
  const copy = Buffer.alloc(source.length); // never the shared allocUnsafe pool
  source.copy(copy);
  return copy;
}

function checkPositive(name: string, value: number): void {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a positive number`);
}

export function createDataKeyCache(options: DataKeyCacheOptions): DataKeyCache {
  const { maxAgeMs, maxUses, maxEntries } = options;
  checkPositive("maxAgeMs", maxAgeMs);
  checkPositive("maxUses", maxUses);
  checkPositive("maxEntries", maxEntries);
  const idleMs = options.idleMs ?? Number.POSITIVE_INFINITY;
  if (options.idleMs !== undefined) checkPositive("idleMs", options.idleMs);
  const now = options.now ?? Date.now;

  // Map order is recency order: a hit re-inserts its entry, so the first one is the LRU.
  const entries = new Map<string, Entry>();
  const flights = new Map<string, Flight>();
  let hits = 0;
  let misses = 0;
  let loads = 0;

  function drop(key: string): void {
    const entry = entries.get(key);
    if (entry === undefined) return;
    entries.delete(key);
    entry.key.fill(0);
  }

  function isExpired(entry: Entry, at: number): boolean {
    return at - entry.loadedAt >= maxAgeMs || at - entry.lastUsedAt >= idleMs || entry.uses >= maxUses;
  }

  // The entry is the loaded buffer itself, which the cache now owns and zeroes on eviction.
  function insert(key: string, loaded: Buffer): void {
    drop(key);
    const at = now();
    entries.set(key, { key: loaded, loadedAt: at, lastUsedAt: at, uses: 0 });
    for (const oldest of entries.keys()) {
      if (entries.size <= maxEntries) break;
      drop(oldest);
    }
  }

  function takeCached(key: string): Buffer | undefined {
    const entry = entries.get(key);
    if (entry === undefined) return undefined;
    const at = now();
    if (isExpired(entry, at)) {
      drop(key);
      return undefined;
    }
    entry.uses += 1;
    entry.lastUsedAt = at;
    const copy = copyOf(entry.key);
    if (entry.uses >= maxUses) {
      drop(key); // used up: zero it now rather than at the next lookup
    } else {
      entries.delete(key);
      entries.set(key, entry);
    }
    return copy;
  }

  function settle(key: string, flight: Flight, loaded: Buffer): void {
    if (flights.get(key) === flight) flights.delete(key);
    // Every waiter gets its copy now, synchronously, before the buffer can be evicted and zeroed.
    for (const waiter of flight.waiters) waiter.resolve(copyOf(loaded));
    // Purged while loading (shred, rotation): hand the key to those waiting, cache nothing.
    if (flight.cacheable) insert(key, loaded);
    else loaded.fill(0);
  }

  function fail(key: string, flight: Flight, err: unknown): void {
    // Don't cache failures: a transient KMS error must not poison every future caller.
    if (flights.get(key) === flight) flights.delete(key);
    for (const waiter of flight.waiters) waiter.reject(err);
  }

  function startFlight(key: string, load: () => Promise<Buffer>): Flight {
    loads += 1;
    const flight: Flight = { waiters: [], cacheable: true };
    flights.set(key, flight);
    void Promise.resolve()
      .then(load)
      .then((loaded) => {
        if (!Buffer.isBuffer(loaded)) throw new TypeError("data-key loader did not return a Buffer");
        settle(key, flight, loaded);
      })
      .catch((err: unknown) => fail(key, flight, err));
    return flight;
  }

  function join(flight: Flight): Promise<Buffer> {
    return new Promise((resolve, reject) => flight.waiters.push({ resolve, reject }));
  }

  async function getOrLoad(key: string, load: () => Promise<Buffer>, retried = false): Promise<Buffer> {
    evictStaleHead();
    const cached = takeCached(key);
    if (cached !== undefined) {
      hits += 1;
      return cached;
    }
    misses += 1;
    const existing = flights.get(key);
    if (existing === undefined) return join(startFlight(key, load));
    try {
      return await join(existing);
    } catch (err) {
      // The first caller's deadline must not fail those who joined its load: each of
      // them retries once with its own load (and its own deadline).
      if (!retried && isBrokerError(err) && err.code === "deadline_exceeded") {
        return getOrLoad(key, load, true);
      }
      throw err;
    }
  }

  // Amortised sweep: the least recently used entry is the likeliest to be stale.
  function evictStaleHead(): void {
    const at = now();
    for (const [key, entry] of entries) {
      if (!isExpired(entry, at)) break;
      drop(key);
    }
  }

  return {
    getOrLoad: (key, load) => getOrLoad(key, load),

    delete(key) {
      const flight = flights.get(key);
      if (flight !== undefined) flight.cacheable = false;
      flights.delete(key);
      drop(key);
    },

    deleteWhere(matches) {
      for (const [key, flight] of flights) {
        if (!matches(key)) continue;
        flight.cacheable = false;
        flights.delete(key);
      }
      let deleted = 0;
      for (const key of [...entries.keys()]) {
        if (!matches(key)) continue;
        drop(key);
        deleted += 1;
      }
      return deleted;
    },

    clear() {
      for (const flight of flights.values()) flight.cacheable = false;
      flights.clear();
      for (const key of [...entries.keys()]) drop(key);
    },

    evictExpired() {
      const at = now();
      let evicted = 0;
      for (const [key, entry] of [...entries]) {
        if (isExpired(entry, at)) {
          drop(key);
          evicted += 1;
        }
      }
      return evicted;
    },

    stats: () => ({ hits, misses, loads, size: entries.size }),
  };
}
