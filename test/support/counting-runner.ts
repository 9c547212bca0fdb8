import type { PreparedRunner } from "../../src/store/prepared.js";

/** A runner that counts the statements (round trips) sent through it. */
export function countingRunner(inner: PreparedRunner): PreparedRunner & { count: number } {
  const runner = {
    count: 0,
    rows<R>(statement: Parameters<PreparedRunner["rows"]>[0], values: readonly unknown[]) {
      runner.count += 1;
      return inner.rows<R>(statement, values);
    },
    transaction<T>(work: (tx: PreparedRunner) => Promise<T>) {
      // begin + commit are round trips too.
      runner.count += 2;
      return inner.transaction((tx) =>
        work({
          rows: (statement, values) => {
            runner.count += 1;
            return tx.rows(statement, values);
          },
          transaction: tx.transaction,
        }),
      );
    },
  };
  return runner;
}
