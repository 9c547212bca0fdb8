/**
 * Groups single-row writes into one statement per batch. Per-row compare-and-set through
 * kysely costs more client CPU than the KMS call's own bookkeeping (≈0.1 ms a query), and
 * the rewrap job is CPU-bound at scale, so rows finishing together are written together.
 * A batch goes out when it is full or `maxDelayMs` after its first row, whichever is first.
 */
export interface WriteBatcher<T> {
  /** Resolves with this item's own result once its batch is written; rejects if the batch fails. */
  write(item: T): Promise<boolean>;
}

export interface WriteBatcherOptions<T> {
  readonly maxBatch: number;
  readonly maxDelayMs: number;
  /** Writes the items; answers one boolean per item, in order. */
  readonly writeBatch: (items: readonly T[]) => Promise<readonly boolean[]>;
}

interface Pending<T> {
  readonly item: T;
  readonly resolve: (written: boolean) => void;
  readonly reject: (err: unknown) => void;
}

export function createWriteBatcher<T>(options: WriteBatcherOptions<T>): WriteBatcher<T> {
  const { maxBatch, maxDelayMs, writeBatch } = options;
  if (!(Number.isInteger(maxBatch) && maxBatch > 0))
    throw new RangeError("maxBatch must be a positive integer");
  let queue: Pending<T>[] = [];
  let timer: NodeJS.Timeout | undefined;

  function flush(): void {
    clearTimeout(timer);
    timer = undefined;
    const batch = queue;
    queue = [];
    writeBatch(batch.map((pending) => pending.item)).then(
      (results) => {
        batch.forEach((pending, i) => {
          pending.resolve(results[i] === true);
        });
      },
      (err: unknown) => {
        for (const pending of batch) pending.reject(err);
      },
    );
  }

  return {
    write(item) {
      return new Promise<boolean>((resolve, reject) => {
        queue.push({ item, resolve, reject });
        if (queue.length >= maxBatch) flush();
        else timer ??= setTimeout(flush, maxDelayMs);
      });
    },
  };
}
