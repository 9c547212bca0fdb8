/**
 * A Map that holds at most `max` entries. Detectors key state by user, caller key or secret; an
 * attacker cycling through ids must cost bounded memory. Two generations instead of a strict LRU
 * (no delete and re-insert per touch, which costs more than the detectors' own arithmetic): an
 * entry touched in the current generation survives the next rotation, one untouched for two
 * rotations is forgotten. Each generation holds at most max / 2.
 */
export class BoundedMap<K, V> {
  readonly #half: number;
  #young = new Map<K, V>();
  #old = new Map<K, V>();

  constructor(max: number) {
    if (!Number.isInteger(max) || max < 2) throw new RangeError("max must be an integer of at least 2");
    this.#half = Math.floor(max / 2);
  }

  /** Entries held now (at most `max`). */
  get size(): number {
    return this.#young.size + this.#old.size;
  }

  /** The entry for `key`, marked as recently used; `create` makes one if it is absent or forgotten. */
  touch(key: K, create: () => V): V {
    const young = this.#young.get(key);
    if (young !== undefined) return young;
    const value = this.#old.get(key) ?? create();
    this.#young.set(key, value);
    if (this.#young.size >= this.#half) {
      this.#old = this.#young;
      this.#young = new Map();
    }
    return value;
  }

  has(key: K): boolean {
    return this.#young.has(key) || this.#old.has(key);
  }
}
