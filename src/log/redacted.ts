import { inspect } from "node:util";

/**
 * Holds a value that must never be printed. JSON, string conversion and util.inspect
 * all render "[REDACTED]"; only `unwrap()` yields the value, so every use is explicit.
 */
export class Redacted<T> {
  readonly #value: T;

  constructor(value: T) {
    this.#value = value;
  }

  unwrap(): T {
    return this.#value;
  }

  toJSON(): string {
    return "[REDACTED]";
  }

  toString(): string {
    return "[REDACTED]";
  }

  [inspect.custom](): string {
    return "[REDACTED]";
  }
}
