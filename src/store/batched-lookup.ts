/** Point reads by key that share one query per batch. */
export interface BatchedLookup<K, V> {
  /** The value for `key`, read by a query that started after this call; undefined if absent. */
  get(key: K): Promise<V | undefined>;
}

export interface BatchedLookupOptions<K, V> {
  /** Reads every key of a batch in one query; the map holds a value per found key, by `idOf`. */
  readonly load: (keys: readonly K[]) => Promise<ReadonlyMap<string, V>>;
  /** Equal ids mean equal keys: they are read once per batch. */
  readonly idOf: (key: K) => string;
  /** Keys per query at most. */
  readonly maxBatch: number;
  /** Queries in flight at once at most; further keys wait for the next one. */
  readonly maxInFlight: number;
}

interface Waiter<V> {
  readonly resolve: (value: V | undefined) => void;
  readonly reject: (err: unknown) => void;
}

interface PendingKey<K, V> {
  readonly key: K;
  readonly waiters: Waiter<V>[];
}

/**
 * Group commit for reads (the DataLoader pattern), for lookups every call makes: under load, the
 * calls of one moment share a round trip instead of each paying for a query, its syscalls and its
 * place in the pool queue (bench/tools/profile-hot-path.ts measured those as most of a call's CPU).
 *
 * Freshness is unchanged: a key NEVER joins a query already in flight. It waits for the next one,
 * so whatever answers a call was read after the call arrived, exactly as if it had queried alone
 * (a revoked caller key fails the very next call: catalogue B20). Keys asked for in the same
 * event-loop turn form a batch; at low load a batch is one key and costs one query, as before.
 */
export function createBatchedLookup<K, V>(options: BatchedLookupOptions<K, V>): BatchedLookup<K, V> {
  const { load, idOf, maxBatch, maxInFlight } = options;
  if (
    !(Number.isSafeInteger(maxBatch) && maxBatch > 0 && Number.isSafeInteger(maxInFlight) && maxInFlight > 0)
  ) {
    throw new RangeError("maxBatch and maxInFlight must be positive integers");
  }
  // Insertion order is arrival order, so batches are served first come, first served.
  const pending = new Map<string, PendingKey<K, V>>();
  let inFlight = 0;
  let scheduled = false;

  function takeBatch(): Array<PendingKey<K, V>> {
    const batch: Array<PendingKey<K, V>> = [];
    for (const [id, entry] of pending) {
      if (batch.length >= maxBatch) break;
      batch.push(entry);
      pending.delete(id);
    }
    return batch;
  }

  async function run(batch: ReadonlyArray<PendingKey<K, V>>): Promise<void> {
    inFlight += 1;
    try {
      const found = await load(batch.map((entry) => entry.key));
      for (const entry of batch) {
        const value = found.get(idOf(entry.key));
        for (const waiter of entry.waiters) waiter.resolve(value);
      }
    } catch (err) {
      // One failed read fails every call that was waiting on it, each with the real error.
      for (const entry of batch) for (const waiter of entry.waiters) waiter.reject(err);
    } finally {
      inFlight -= 1;
      startBatches();
    }
  }

  function startBatches(): void {
    while (inFlight < maxInFlight && pending.size > 0) void run(takeBatch());
  }

  function schedule(): void {
    if (scheduled) return;
    scheduled = true;
    // setImmediate, not a microtask: calls decoded from one socket read all ask before it runs.
    setImmediate(() => {
      scheduled = false;
      startBatches();
    });
  }

  return {
    get(key) {
      return new Promise<V | undefined>((resolve, reject) => {
        const id = idOf(key);
        let entry = pending.get(id);
        if (entry === undefined) {
          entry = { key, waiters: [] };
          pending.set(id, entry);
        }
        entry.waiters.push({ resolve, reject });
        schedule();
      });
    },
  };
}
